"""Knowledge: does the index find the passage a question comes from, and does the embedded model
answer better with the assistant's knowledge files than without?

    .venv/bin/python scripts/make_knowledge_questions.py   # the question set (from the docs)
    .venv/bin/python bench/knowledge_benchmark.py          # both parts (about 15 min, 2 CPUs)
    .venv/bin/python bench/knowledge_benchmark.py --limit 5 --results /tmp/k.json   # smoke

Through the product's own path, in a fresh FEWTUNE_HOME: an assistant `docs` whose knowledge is
the documents the questions were made from (`core.knowledge.add`, as `fewtune knowledge add`
does), and an assistant `plain` with the same instructions and settings and no knowledge.

- Retrieval: `core.knowledge.search(..., k)` for each question (what `fewtune knowledge search`
  ranks). A question is found at k when one of its gold chunks is among the first k: the chunks of
  its file that hold its whole source sentence, looked up in the stored chunks at run time (so a
  document edited since the set was made leaves its changed questions out, counted as stale).
  Also how often the gold chunk would be in the prompt: among the first `knowledge_k` and at
  least `min_score` alike, the floor a prompt's passages must reach.
  Beside it, recall@4 of each ranking the search fuses, alone: by meaning (cosine), by words
  (BM25), and fused (what the product uses).
- Answers: `core.chat.ask` for each question to both assistants, on the embedded
  SmolLM2-135M-Instruct by default (temperature 0, no history, no examples). An answer is right
  when the first number it states that the question does not already hold is the question's
  number (citation markers like [1] and thousands commas taken out; 2.0 is 2): a reply that
  repeats the question's figures, or gives another number first, is wrong. Each rate has a 95%
  Wilson interval; the two are compared on the same questions by an exact McNemar test
  (questions only one of them gets right).

Writes the figures as JSON (--results) and prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from make_knowledge_questions import normalized  # noqa: E402  (the set's own matching rule)

from assistants import TERMINAL, Core  # noqa: E402
from assistants.local_server import stop_local_server  # noqa: E402
from assistants.stats import binomial_p, wilson  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "knowledge" / "questions.jsonl"
RESULTS = ROOT / "bench" / "results" / "knowledge.json"
INSTRUCTIONS = (
    "You answer questions about fewtune, a Discord bot for custom assistants. "
    "Answer in one short sentence that gives the number asked for."
)
_CITATION = re.compile(r"\[\d+\]")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w]|\.\d)")


def numbers_in(text: str) -> list[float]:
    """The numbers a text states, in order (citation markers like [1] and thousands commas out)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", _CITATION.sub(" ", text))
    return [float(n) for n in _NUMBER.findall(text)]


def answered(reply: str, question: str, answer: str) -> bool:
    """Whether the reply's answer is the question's number: the first number it states that the
    question does not already hold (a reply that only repeats the question's figures, or states
    another number first, is wrong)."""
    asked = set(numbers_in(question))
    new = [n for n in numbers_in(reply) if n not in asked]
    return bool(new) and new[0] == float(answer)


def setup(core: Core, files: list[str], args: argparse.Namespace) -> dict[str, str]:
    """The two assistants; the documents added to `docs`. Returns each file's stored name."""
    settings = dict(model=args.model, temperature=0.0, max_tokens=args.max_tokens, history=0, k=0)
    for name in ("docs", "plain"):
        core.assistants.create(TERMINAL, name, INSTRUCTIONS, **settings)
    stored = {f: f.replace("/", "-") for f in files}  # docs/design.md -> docs-design.md
    started = time.perf_counter()
    added = core.knowledge.add(
        TERMINAL, "docs", [(stored[f], (ROOT / f).read_bytes()) for f in files]
    )
    chunks = sum(f.chunks for f in added)
    print(
        f"added {len(added)} files ({chunks} chunks) to docs in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return stored


def gold_chunks(core: Core, items: list[dict], stored: dict[str, str]) -> dict[int, set[int]]:
    """Each question's gold chunk ids: its file's stored chunks that hold its whole sentence."""
    files = {f.name: f for f in core.knowledge.list(TERMINAL, "docs")}
    texts = {
        name: [(c.id, normalized(c.text)) for c in core.knowledge.chunks_of(f.id)]
        for name, f in files.items()
    }
    return {
        item["id"]: {cid for cid, text in texts[stored[item["file"]]] if item["sentence"] in text}
        for item in items
    }


def retrieval(
    core: Core, items: list[dict], gold: dict[int, set[int]], ks: list[int]
) -> dict[str, Any]:
    """Recall@k over the questions that still have a gold chunk, and the found chunks' scores."""
    floor, prompt_k = core.settings.knowledge.min_score, core.settings.knowledge.knowledge_k
    found_at = {k: 0 for k in ks}
    in_prompt, ranks = 0, []
    for item in items:
        hits = core.knowledge.search(TERMINAL, "docs", item["question"], k=max(ks))
        rank = next((i for i, h in enumerate(hits) if h.chunk.id in gold[item["id"]]), None)
        ranks.append(rank)
        for k in ks:
            found_at[k] += rank is not None and rank < k
        in_prompt += rank is not None and rank < prompt_k and hits[rank].score >= floor
    n = len(items)
    return {
        "questions": n,
        "recall": {str(k): found_at[k] / n for k in ks},
        "recall_interval": {str(k): wilson(found_at[k], n) for k in ks},
        "mrr": sum(1 / (r + 1) for r in ranks if r is not None) / n,
        "gold_in_prompt": in_prompt / n,  # among the first knowledge_k and at least min_score
        "min_score": floor,
        "knowledge_k": prompt_k,
        "gold_rank": ranks,  # per question, 0-based; None: not in the first max(ks)
    }


def each_ranking(
    core: Core, items: list[dict], gold: dict[int, set[int]], k: int
) -> dict[str, float]:
    """Recall@k of each ranking the search fuses, alone: the nearest by meaning and the best
    matches by words, over the chunks as answering holds them (assistants/knowledge/held.py).
    Their fusion is the search itself (`retrieval`)."""
    assistant = core.assistants.get(TERMINAL, "docs")
    held = core.held_knowledge.of(assistant.id)
    assert held is not None
    found = {"meaning": 0, "words": 0}
    for item in items:
        cosines = held.cosines(core.embedder.embed_one(item["question"]))
        lists = {
            "meaning": [held.ids[row] for row in np.argsort(-cosines, kind="stable")[:k]],
            "words": held.words.best(item["question"], k),
        }
        for name, ids in lists.items():
            found[name] += bool(gold[item["id"]] & set(ids))
    return {name: n / len(items) for name, n in found.items()}


async def answers(core: Core, items: list[dict]) -> list[dict[str, Any]]:
    """Both assistants' replies to every question, with whether each is right."""
    out = []
    started = time.perf_counter()
    for n, item in enumerate(items, 1):
        row: dict[str, Any] = {"id": item["id"], "answer": item["answer"]}
        for name in ("docs", "plain"):
            reply = await core.chat.ask(TERMINAL, name, item["question"])
            row[name] = {
                "reply": reply.text,
                "right": answered(reply.text, item["question"], item["answer"]),
                "sources": [s.label for s in reply.sources],
                "trimmed": reply.trimmed,
            }
        out.append(row)
        if n % 10 == 0 or n == len(items):
            right = {a: sum(r[a]["right"] for r in out) for a in ("docs", "plain")}
            print(
                f"  {n}/{len(items)} answered: with knowledge {right['docs']} right, "
                f"without {right['plain']} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return out


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    right = {a: sum(r[a]["right"] for r in rows) for a in ("docs", "plain")}
    wins = sum(r["docs"]["right"] and not r["plain"]["right"] for r in rows)
    losses = sum(r["plain"]["right"] and not r["docs"]["right"] for r in rows)
    return {
        "questions": n,
        "with_knowledge": {"right": right["docs"], "rate": right["docs"] / n,
                           "interval": wilson(right["docs"], n)},
        "without_knowledge": {"right": right["plain"], "rate": right["plain"] / n,
                              "interval": wilson(right["plain"], n)},
        "only_with": wins,
        "only_without": losses,
        "mcnemar_p": binomial_p(wins, losses),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--limit", type=int, default=0, help="the first N questions only")
    parser.add_argument("--model", default="local:SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-answers", action="store_true", help="retrieval only")
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()

    lines = args.questions.read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    items = items[: args.limit] if args.limit else items
    files = sorted({item["file"] for item in items})
    home = args.home or Path(tempfile.mkdtemp(prefix="fewtune-knowledge-"))
    os.environ["FEWTUNE_HOME"] = str(home)
    core = Core.open(home)
    try:
        stored = setup(core, files, args)
        gold = gold_chunks(core, items, stored)
        current = [item for item in items if gold[item["id"]]]
        stale = len(items) - len(current)
        print(f"{len(current)} questions ({stale} stale: their sentence is no longer in the docs)")
        found = retrieval(core, current, gold, [1, 4, 10])
        recall = found["recall"]
        print(
            f"retrieval: recall@1 {recall['1']:.3f}  recall@4 {recall['4']:.3f}  "
            f"recall@10 {recall['10']:.3f}  (goal: recall@4 >= 0.9); MRR {found['mrr']:.3f}; "
            f"gold chunk in the prompt (first {found['knowledge_k']}, at least min_score) "
            f"{found['gold_in_prompt']:.3f}",
            flush=True,
        )
        found["rankings_recall_at_4"] = {
            **each_ranking(core, current, gold, 4),
            "fused": found["recall"]["4"],
        }
        print(
            "recall@4 by ranking: "
            + ", ".join(f"{k} {v:.3f}" for k, v in found["rankings_recall_at_4"].items()),
            flush=True,
        )
        results: dict[str, Any] = {
            "questions_file": str(args.questions.relative_to(ROOT))
            if args.questions.is_relative_to(ROOT)
            else str(args.questions),
            "files": files,
            "stale": stale,
            "model": args.model,
            "retrieval": found,
        }
        if not args.no_answers:
            rows = asyncio.run(answers(core, current))
            results["answers"] = compare(rows)
            results["replies"] = rows
            a = results["answers"]
            for key, label in (
                ("with_knowledge", "with knowledge"),
                ("without_knowledge", "without knowledge"),
            ):
                s = a[key]
                print(
                    f"{label}: {s['right']}/{a['questions']} right, {s['rate']:.1%} "
                    f"[{s['interval'][0]:.1%}, {s['interval'][1]:.1%}]"
                )
            print(
                f"only with knowledge right {a['only_with']}, only without {a['only_without']}: "
                f"exact McNemar p = {a['mcnemar_p']:.2g} (goal: with knowledge wins, p < 0.05)"
            )
    finally:
        asyncio.run(core.providers.close())
        stop_local_server(core.settings)  # started on demand for this home only
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"results -> {args.results}")


if __name__ == "__main__":
    main()
