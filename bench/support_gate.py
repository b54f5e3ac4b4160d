"""The evaluation gate on a free-form task: the support assistant of a fictional kettle (made by
scripts/make_support_assistant.py), where exact match cannot judge, promoted twice: with a good
adapter and with a broken one trained on the same questions with answers shuffled between them.

    .venv/bin/python bench/support_gate.py                    # the full run (about an hour, 2 CPUs)
    .venv/bin/python bench/support_gate.py --limit 3 --max-steps 1 --results /tmp/s.json  # smoke

Through the product's own path: a fresh FEWTUNE_HOME and `Core`; the assistant created and its
examples imported as a user would (`core.examples.import_data`); its training chats built by
the promotion's own dataset builder (`core.promotions.dataset(..., with_examples=True)`: each
chat carries the k examples the assistant retrieves for it, never its own; the builder's own
held-out split is left out of training, as a promotion leaves it out); each adapter trained by
fewtune's trainer (`training.trainer.train`) on the embedded SmolLM2-135M-Instruct, put in the
home's adapters folder and served by the on-demand local server (`fewtune serve`); then the
gate's own evaluation (`assistants.evaluation.Evaluation`, which ends in `assistants.gate`) on
the held-out chats (bench/data/support/held_out.jsonl, questions none of the examples ask):
few-shot on the base model, the adapter alone, the adapter with the retrieved examples. No judge
is configured, so the likelihood of the reference answers is the primary metric.

The broken adapter: the same training chats with their answers permuted (seeded) so that no chat
keeps an answer about its own fact; the house style stays, the facts go wrong.

Prints each setting's scores with 95% intervals, the tests' p-values and the gate's decision for
both adapters; writes the JSON (--results) and a chart (--chart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistants import TERMINAL, Core  # noqa: E402
from assistants.dataset import HeldOutItem  # noqa: E402
from assistants.evaluation import Evaluation, Setting  # noqa: E402
from assistants.gate import LABELS, SETTINGS  # noqa: E402
from assistants.local_server import stop_local_server  # noqa: E402
from assistants.providers import ModelRef  # noqa: E402

DATA = "bench/data/support"  # relative to the repository
RESULTS = ROOT / "bench" / "results" / "support_gate.json"
CHART = ROOT / "docs" / "support_gate.png"
BASE = "SmolLM2-135M-Instruct"
ADAPTERS = {"good": "answers as written", "broken": "answers shuffled between questions"}


def load(folder: Path) -> tuple[dict, list[dict], bytes, list[dict]]:
    """The assistant's definition, the fact table, the examples file and the held-out chats."""
    definition = json.loads((folder / "assistant.json").read_text(encoding="utf-8"))
    facts = json.loads((folder / "facts.json").read_text(encoding="utf-8"))
    examples = (folder / "examples.jsonl").read_bytes()
    held_out = [json.loads(line) for line in (folder / "held_out.jsonl").read_text().splitlines()]
    return definition, facts, examples, held_out


def fact_of(answer: str, facts: list[dict]) -> str | None:
    """The key of the fact an answer states: the longest fact value it contains."""
    found = [f for f in facts if f["value"] in answer]
    return max(found, key=lambda f: len(f["value"]))["key"] if found else None


def shuffled_answers(
    chats: list[dict[str, Any]], facts: list[dict], seed: int
) -> list[dict[str, Any]]:
    """The chats with their last answers permuted so that none keeps an answer about its own
    fact (a seeded shuffle, redrawn until it is such a derangement)."""
    answers = [c["messages"][-1]["content"] for c in chats]
    keys = [fact_of(a, facts) for a in answers]
    rng = random.Random(seed)
    order = list(range(len(chats)))
    for _ in range(10_000):
        rng.shuffle(order)
        if all(keys[i] != keys[j] for i, j in enumerate(order)):
            break
    else:
        raise RuntimeError("no shuffle moves every answer to another fact")
    out = []
    for i, chat in enumerate(chats):
        last = {**chat["messages"][-1], "content": answers[order[i]]}
        out.append({**chat, "messages": [*chat["messages"][:-1], last]})
    return out


def train_adapter(
    chats: list[dict[str, Any]], base: Path, work: Path, args: argparse.Namespace
) -> tuple[Path, dict[str, Any]]:
    """An adapter trained by fewtune's trainer on `chats`; its folder and a record of the run."""
    from training.trainer.lora import TrainConfig, train
    from training.trainer.progress import LossLog

    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats))
    config = TrainConfig(
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_r=args.rank,
        lora_alpha=2 * args.rank,
        seed=args.seed,
        checkpoint_every=0,
        max_steps=args.max_steps,
        base_model_name=BASE,
    )
    log = LossLog(every=5, indent="  ")
    result = train(config, base, train_file, work / "run", on_event=log)
    assert result.adapter_path is not None
    return result.adapter_path, {
        "chats": len(chats),
        "steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "train_loss_per_step": log.losses,
        "minutes": log.minutes,
    }


def served(core: Core, adapter: Path, name: str) -> ModelRef:
    """The adapter in the home's adapters folder, where the local server serves it by name."""
    target = core.settings.adapters_path / name
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(adapter, target)
    return ModelRef("local", name)


def show(label: str, evaluation: dict[str, Any]) -> None:
    print(f"\n{label}: {evaluation['items']} held-out chats")
    for setting in SETTINGS:
        s = evaluation[setting]
        lp, lp_ci = s["log_prob"], s["intervals"].get("log_prob")
        f1, f1_ci = s["token_f1"], s["intervals"]["token_f1"]
        likelihood = f"{lp:7.3f} ({lp_ci[0]:.3f} to {lp_ci[1]:.3f})" if lp is not None else "-"
        m, m_ci = s.get("margin"), s["intervals"].get("margin")
        margin = f"{m:+.3f} ({m_ci[0]:+.3f} to {m_ci[1]:+.3f})" if m is not None else "-"
        print(
            f"  {LABELS[setting]:24} log-prob/token {likelihood}  margin {margin}  "
            f"F1 {f1:.3f} ({f1_ci[0]:.3f}-{f1_ci[1]:.3f})  exact {s['exact_match']:.1%}"
        )
    for candidate, tests in evaluation["tests"].items():
        shown = ", ".join(
            f"{metric} {t['test']} p={t['p']:.2g} (diff {t['difference']:+.3f})"
            for metric, t in tests.items()
        )
        print(f"  {LABELS[candidate]} vs few-shot: {shown}")
    for note in evaluation["notes"]:
        print(f"  note: {note}")
    print(f"  decision: {evaluation['decision']['reason']}", flush=True)


async def evaluate(
    core: Core, name: str, items: list[HeldOutItem], tuned: ModelRef
) -> dict[str, Any]:
    """The gate's own evaluation and decision, as a promotion runs it."""
    assistant = core.assistants.get(TERMINAL, name)
    settings = {
        "few_shot": Setting(ModelRef.parse(assistant.model), assistant.k),
        "fine_tuned": Setting(tuned, 0),
        "fine_tuned_with_examples": Setting(tuned, assistant.k),
    }

    async def on_progress(message: str) -> None:
        print(f"  {message}", flush=True)

    evaluation = Evaluation(core.chat, core.providers, core.executor, assistant)
    return await evaluation.run(items, settings, None, on_progress)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    definition, facts, examples, held_out = load(ROOT / args.data)
    work = Path(tempfile.mkdtemp(prefix="fewtune-support-gate-"))
    home = Path(args.home) if args.home else work / "home"
    os.environ["FEWTUNE_HOME"] = str(home)
    core = Core.open(home)
    results: dict[str, Any] = {"data": args.data}
    try:
        name = definition["name"]
        core.assistants.create(
            TERMINAL,
            name,
            definition["instructions"],
            description=definition["description"],
            k=definition["k"],
            selector=definition["selector"],
            temperature=definition["temperature"],
            history=definition["history"],
            max_tokens=definition["max_tokens"],
        )
        imported = core.examples.import_data(TERMINAL, name, "examples.jsonl", examples)
        _, data = core.promotions.dataset(TERMINAL, name, with_examples=True)
        from training.base_models import embedded_model_dir

        base = embedded_model_dir(core.settings)
        chats = data.train
        # The builder's held-out examples stay out of every prompt, as in training.
        exclude = frozenset(data.held_out_example_ids)
        items = [
            HeldOutItem([], h["messages"][0]["content"], h["messages"][1]["content"], exclude)
            for h in held_out[: args.limit]
        ]
        print(
            f"{imported.added} examples imported; {len(chats)} training chats with their "
            f"retrieved examples ({data.stats['held_out_chats']} held out by the builder); "
            f"{len(items)} held-out chats to judge on; home {home}",
            flush=True,
        )
        trainings = {
            "good": chats,
            "broken": shuffled_answers(chats, facts, args.seed),
        }
        trainings = {kind: trainings[kind] for kind in args.adapters.split(",")}
        results.update(
            examples=imported.added,
            training_chats=len(chats),
            held_out_items=len(items),
            k=definition["k"],
            config={
                "n_epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "lora_r": args.rank,
                "lora_alpha": 2 * args.rank,
                "seed": args.seed,
                "max_steps": args.max_steps,
            },
            adapters={},
        )
        for kind, training in trainings.items():
            print(f"\ntraining the {kind} adapter ({ADAPTERS[kind]})", flush=True)
            folder = work / kind
            folder.mkdir()
            adapter, record = train_adapter(training, base, folder, args)
            ref = served(core, adapter, f"ft:{BASE}:{name}:{kind}")
            print(f"evaluating the {kind} adapter ({ref})", flush=True)
            started = time.monotonic()
            evaluation = await evaluate(core, name, items, ref)
            results["adapters"][kind] = {
                "what": ADAPTERS[kind],
                "training": record,
                "evaluation": evaluation,
                "evaluation_minutes": round((time.monotonic() - started) / 60, 1),
            }
            show(f"{kind} adapter", evaluation)
            write(results, Path(args.results))  # so far: a run cut short keeps what it did
    finally:
        await core.providers.close()
        core.close()
        stop_local_server(core.settings)  # started on demand for this home only
        if not args.home:
            shutil.rmtree(work, ignore_errors=True)
    return results


def write(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n")


def chart(results: dict[str, Any], path: Path) -> None:
    """Per setting, with 95% intervals, for both adapters (few-shot is the same model in both
    columns): the mean log-probability per token of the reference answers (top) and its margin
    over another held-out chat's prompt (bottom), where the gate's guard reads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adapters = list(results["adapters"].items())
    fig, axes = plt.subplots(2, len(adapters), figsize=(5 * len(adapters), 7), squeeze=False)
    rows = (("log_prob", "log-prob / token of the reference"), ("margin", "likelihood margin"))
    for column, (kind, adapter) in enumerate(adapters):
        evaluation = adapter["evaluation"]
        for row, (metric, label) in enumerate(rows):
            ax = axes[row][column]
            shown = [s for s in SETTINGS if evaluation[s].get(metric) is not None]
            means = [evaluation[s][metric] for s in shown]
            ranges = [evaluation[s]["intervals"][metric] for s in shown]
            lows = [m - r[0] for m, r in zip(means, ranges, strict=True)]
            highs = [r[1] - m for m, r in zip(means, ranges, strict=True)]
            ax.bar(
                [LABELS[s] for s in shown],
                means,
                yerr=[lows, highs],
                capsize=4,
                color=["#999999", "#4477aa", "#66ccee"][: len(shown)],
            )
            ax.set_ylabel(label)
            ax.tick_params(axis="x", labelsize=8)
            if row == 0:
                decision = "switch" if evaluation["decision"]["switch"] else "keep"
                ax.set_title(f"{kind} adapter, {evaluation['items']} held-out chats: {decision}")
    fig.suptitle("Support gate: the reference answers' likelihood and its margin, 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA, help="the folder the generator wrote")
    parser.add_argument("--limit", type=int, default=None, help="held-out chats (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=4e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=None, help="stop training early")
    parser.add_argument(
        "--adapters", default="good,broken", help="which adapters to train and evaluate"
    )
    parser.add_argument("--home", default=None, help="FEWTUNE_HOME to use (kept afterwards)")
    parser.add_argument("--results", default=str(RESULTS), help="the results JSON to write")
    parser.add_argument("--chart", default=str(CHART), help="the chart PNG ('' for none)")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    write(results, Path(args.results))
    if args.chart:
        chart(results, Path(args.chart))


if __name__ == "__main__":
    main()
