"""The demo as shipped, measured: the few-shot `numbers` against its promoted twin
`numbers-tuned` (the adapter in assistants/demo/adapter/), on test items none of the demo's
examples contain, through the product's own path.

    .venv/bin/python bench/demo_twin.py                      # bench/data/numbers_test.jsonl
    .venv/bin/python bench/demo_twin.py --test my_test.jsonl --limit 100
    .venv/bin/python bench/demo_twin.py --words "quarante-cinq,четыре"   # just these, shown

A fresh FEWTUNE_HOME (or --home); `install_demo` sets both assistants up exactly as `fewtune
demo` does; every answer comes from `core.chat.ask` through the on-demand local server.
Settings: the demo (few-shot, its selector and k), the twin as shipped (its adapter with its k
examples, by its selector), the twin alone (k = 0), and few-shot with the twin's selector (so
the adapter is compared with the same examples in the prompt). Test items whose words are among
the demo's examples are left out (the twin was trained on those). Exact match; 95% Wilson
intervals; exact McNemar tests on paired outcomes. Prints a table and writes JSON (--results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from numbers_benchmark import load_jsonl, mcnemar_exact, normalise, pick_test, wilson  # noqa: E402

from assistants import TERMINAL, Core  # noqa: E402
from assistants.demo import DEMO_NAME, TWIN_NAME, demo_files, install_demo  # noqa: E402

DATA = ROOT / "bench" / "data" / "numbers_test.jsonl"


def settings(core: Core) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, assistant, edits) for every setting; the edited copies are made here."""
    demo = core.assistants.get(TERMINAL, DEMO_NAME)
    twin = core.assistants.get(TERMINAL, TWIN_NAME)
    out = [
        (f"few-shot ({demo.selector} {demo.k})", DEMO_NAME, {}),
        (f"twin + {twin.k} examples ({twin.selector})", TWIN_NAME, {}),
        ("twin alone (k=0)", f"{TWIN_NAME}-alone", {"k": 0}),
    ]
    if twin.selector != demo.selector:
        label = f"few-shot ({twin.selector} {twin.k})"
        out.insert(1, (label, f"{DEMO_NAME}-{twin.selector}", {"selector": twin.selector}))
    return out


def copy_of(core: Core, source: str, name: str, edits: dict[str, Any]) -> None:
    """`name`: the assistant `source` with `edits`, the same examples and model."""
    if name == source or name in {a.name for a in core.assistants.list(TERMINAL)}:
        return
    original = core.assistants.get(TERMINAL, source)
    _, examples = demo_files()
    core.assistants.create(
        TERMINAL,
        name,
        original.instructions,
        k=edits.get("k", original.k),
        selector=edits.get("selector", original.selector),
        temperature=0.0,
        history=0,
        max_tokens=original.max_tokens,
    )
    core.examples.import_data(TERMINAL, name, "numbers.jsonl", examples)
    if original.fine_tuned_model:
        core.assistants.set_fine_tuned_model(TERMINAL, name, original.fine_tuned_model)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(args.home or tempfile.mkdtemp(prefix="fewtune-demo-twin-"))
    os.environ["FEWTUNE_HOME"] = str(home)
    core = Core.open(home)
    try:
        install_demo(core, TERMINAL)
        chosen = settings(core)
        for _, name, edits in chosen:
            if edits:
                copy_of(core, TWIN_NAME if "alone" in name else DEMO_NAME, name, edits)
        if args.words:
            test = [{"input": w.strip(), "output": "?", "lang": "?"} for w in args.words.split(",")]
        else:
            trained = {json.loads(line)["input"] for line in demo_files()[1].decode().splitlines()}
            test = [t for t in load_jsonl(Path(args.test)) if t["input"] not in trained]
            test = [test[i] for i in pick_test(test, args.limit)]
        print(f"{len(test)} test items; home {home}", flush=True)
        results: dict[str, Any] = {"items": len(test), "settings": {}}
        for label, name, _ in chosen:
            started = time.perf_counter()
            rows = []
            for item in test:
                reply = await core.chat.ask(TERMINAL, name, item["input"])
                rows.append(
                    {
                        **item,
                        "answer": reply.text,
                        "correct": int(normalise(reply.text) == item["output"]),
                        "examples": [f"{e.input} → {e.output}" for e in reply.examples],
                    }
                )
                if args.words:
                    print(f"  {label}: {item['input']} → {reply.text}  {rows[-1]['examples']}")
            hits = sum(r["correct"] for r in rows)
            low, high = wilson(hits, len(rows))
            results["settings"][label] = {
                "assistant": name,
                "correct": hits,
                "accuracy": hits / len(rows),
                "ci95": [low, high],
                "seconds": round(time.perf_counter() - started, 1),
                "outcomes": rows,
            }
            print(
                f"{label:36} {hits:4}/{len(rows)}  {hits / len(rows):6.1%}  "
                f"({low:.1%}-{high:.1%})  {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    finally:
        await core.providers.close()
        core.close()
    labels = list(results["settings"])
    tests = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            oa = [r["correct"] for r in results["settings"][a]["outcomes"]]
            ob = [r["correct"] for r in results["settings"][b]["outcomes"]]
            tests[f"{a} vs {b}"] = mcnemar_exact(oa, ob)
    results["mcnemar"] = tests
    if not args.words:
        for pair, t in tests.items():
            print(f"McNemar {pair}: {t['only_a']}/{t['only_b']} p={t['p_value']:.2g}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", default=str(DATA), help="JSONL of input/output/lang")
    parser.add_argument("--limit", type=int, default=None, help="test items (default: all)")
    parser.add_argument("--words", default=None, help="comma-separated words to show instead")
    parser.add_argument("--home", default=None, help="FEWTUNE_HOME to use")
    parser.add_argument("--results", default=None, help="write the results JSON here")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.results:
        Path(args.results).write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
