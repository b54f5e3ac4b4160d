"""The article's benchmark: number words in many languages and scripts -> digits, few-shot vs
fine-tuned, measured through fewtune's own path.

    .venv/bin/python bench/numbers_benchmark.py --limit 40 --k-values 1,3 --epochs 1 --train-limit 64
    .venv/bin/python bench/numbers_benchmark.py --home /tmp/numbers-home   # full: 1 epoch, lr x2
    .venv/bin/python bench/numbers_benchmark.py --home /tmp/numbers-home   # again: resumes a stopped run, or redraws from the cache
    .venv/bin/python bench/numbers_benchmark.py --pool my_pool.jsonl --test my_test.jsonl   # other data

On data it was not tuned on: --pool (the examples every assistant gets) and --test (what is
asked) are JSONL files, one {"input": ..., "output": ..., "lang": ...} a line; by default the
15 languages of bench/data/. A tiny run to see that it works (a minute or two):

    head -n 300 bench/data/numbers_pool.jsonl > /tmp/pool.jsonl
    head -n 40 bench/data/numbers_test.jsonl > /tmp/test.jsonl
    .venv/bin/python bench/numbers_benchmark.py --pool /tmp/pool.jsonl --test /tmp/test.jsonl \
        --limit 10 --k-values 1 --skip-promotion --results /tmp/numbers.json --chart /tmp/numbers.png

Everything goes through the product: a Core in a fresh FEWTUNE_HOME (or --home), one assistant
per setting made with `core.assistants.create` (the demo's instructions), the example pool
imported with `core.examples.import_data`, every answer from `core.chat.ask` (the on-demand
local `fewtune serve`, reached with the openai client; temperature 0, max_tokens 8), and the
promotion with `core.promotions.start/follow/switch` (the server's fine-tuning API; the dataset
is the promoted assistant's examples, i.e. the pool, built by assistants/dataset.py, which keeps
its 10% held-out split as the validation file). The promoted assistant is trained before it
answers anything, so none of its own test answers can reach its training data.

With --train-with-examples the promoted assistant is trained the way the hybrid serves it:
each training chat carries its 3 retrieved examples (weight 0, never its own; the assistant's
setting is named `-served`). Without it the training chats are bare, as before.

Settings: zero-shot (k=0 in --k-values); random, retrieved (similarity) and covering (the
coverage selector) k-shot for each k (--selectors picks among them); the promoted model alone
(k=0) and with 3 retrieved examples (the article's hybrid). Each few-shot setting is measured in
every prompt layout of --layouts (turns, system, pairs; default: the one new assistants get), and
with the best example first as well for the layouts of --best-first; keys and names carry the
layout and order (`retrieved-k4-system`, `covering-k4-pairs-best-first`; none for turns, best
last, so older homes resume). The promoted assistant uses the first layout. The layout study
(issue 10 item 2, docs/benchmarks.md):

    .venv/bin/python bench/numbers_benchmark.py --home /tmp/layout-home --skip-promotion \
        --k-values 4 --selectors similarity,coverage --layouts turns,system,pairs --limit 40

Exact match after stripping whitespace and a trailing period. Reported: accuracy with a 95%
Wilson interval, accuracy per language, exact (binomial) McNemar tests on paired outcomes
(between selectors, between layouts at the same selector and k, best first vs best last), and in
the results JSON every setting's outcome per test item (input, lang, expected, answer, correct).

Answers are cached in <home>/benchmark_answers.json as they come, so a rerun with the same
--home resumes where it stopped (a running promotion is followed, a finished one reused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import assistants.chat  # noqa: E402
from assistants import Actor, Core, NotFound  # noqa: E402
from assistants.assistant import DEFAULT_LAYOUT  # noqa: E402
from assistants.promotion import Step  # noqa: E402
from assistants.prompt import LAYOUTS, build_prompt  # noqa: E402
from assistants.stats import binomial_p, wilson  # noqa: E402

DATA = ROOT / "bench" / "data"
DEMO = ROOT / "assistants" / "demo" / "numbers.json"
RESULTS = ROOT / "bench" / "results" / "numbers.json"
CHART = ROOT / "docs" / "numbers_benchmark.png"
ACTOR = Actor(user_id="benchmark")
# SmolLM2 writes one token per digit, so a right answer (" 100." at most) is 5 tokens; 8 leaves
# room to see that an answer goes on (then it is wrong anyway) without paying for 12 or more.
MAX_TOKENS = 8
HYBRID_K = 3
SAVE_EVERY = 10  # answers between writes of the cache


# -- settings and data -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # cache key and assistant name suffix
    label: str
    selector: str
    k: int
    tuned: bool = False
    layout: str = "turns"
    best_first: bool = False  # the best example first in the prompt instead of nearest the message


SELECTOR_WORDS = {"random": "random", "similarity": "retrieved", "coverage": "covering"}


def variant(layout: str, best_first: bool) -> tuple[str, str]:
    """The key and label suffixes of a layout and order: none for `turns`, best last (the
    settings measured before layouts existed keep their keys, so their homes resume)."""
    key = ("" if layout == "turns" else f"-{layout}") + ("-best-first" if best_first else "")
    label = ("" if layout == "turns" else f", {layout}") + (", best first" if best_first else "")
    return key, label


def few_shot_settings(
    k_values: list[int],
    layouts: tuple[str, ...] = ("turns",),
    selectors: tuple[str, ...] = ("random", "similarity", "coverage"),
    best_first: tuple[str, ...] = (),
) -> list[Setting]:
    """Zero-shot (k=0 in k_values: no example, so the same prompt in every layout), then each
    k, selector and layout, and best first for the layouts in `best_first`."""
    out = []
    if 0 in k_values:
        out.append(Setting("zero-shot", "zero-shot", "similarity", 0, layout=layouts[0]))
    for layout in layouts:
        for first in (False, True) if layout in best_first else (False,):
            key, label = variant(layout, first)
            for k in (k for k in k_values if k > 0):
                for selector in selectors:
                    word = SELECTOR_WORDS[selector]
                    out.append(
                        Setting(
                            f"{word}-k{k}{key}",
                            f"{word} {k}-shot{label}",
                            selector,
                            k,
                            layout=layout,
                            best_first=first,
                        )
                    )
    return out


def tuned_settings(tag: str, layout: str = "turns") -> list[Setting]:
    key, label = variant(layout, False)
    return [
        Setting(f"{tag}-k0", "fine-tuned", "similarity", 0, tuned=True, layout=layout),
        Setting(
            f"{tag}-k{HYBRID_K}{key}",
            f"fine-tuned + {HYBRID_K} retrieved{label}",
            "similarity",
            HYBRID_K,
            tuned=True,
            layout=layout,
        ),
    ]


FIELDS = ("input", "output", "lang")


class BadData(ValueError):
    """A --pool or --test file that is not JSONL of input/output/lang strings."""


def load_jsonl(path: Path) -> list[dict[str, str]]:
    """The items of a pool or test file: one JSON object a line with input, output and lang
    (strings; other keys are ignored). Raises BadData naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadData(f"{path} cannot be read as UTF-8 text ({exc}).") from exc
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadData(f"{path} line {number} is not JSON ({exc.msg}).") from exc
        if not isinstance(item, dict) or not all(
            isinstance(item.get(f), str) and item[f].strip() for f in FIELDS
        ):
            raise BadData(f"{path} line {number} needs non-empty strings for {', '.join(FIELDS)}.")
        items.append({f: item[f] for f in FIELDS})
    if not items:
        raise BadData(f"{path} holds no items; write one JSON object a line.")
    return items


def data_fingerprint(pool: list[dict[str, str]], test: list[dict[str, str]]) -> str:
    """Which data a home's cached answers belong to (answers are cached by test line)."""
    text = json.dumps([pool, test], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pick_test(items: list[dict[str, str]], limit: int | None) -> list[int]:
    """Indices of the test items to use: all, or the first `limit` of a fixed shuffle (every
    language gets a share, unlike the file's first N lines, which are sorted by language; and a
    larger limit extends a smaller one, so a rerun with a larger --limit reuses every answer)."""
    if not limit or limit >= len(items):
        return list(range(len(items)))
    return sorted(random.Random(0).sample(range(len(items)), len(items))[:limit])


def pick_train(pool: list[dict[str, str]], limit: int | None) -> list[dict[str, str]]:
    """The pool items the promoted assistant gets: all, or a fixed random subset (quick runs)."""
    if not limit or limit >= len(pool):
        return pool
    return [pool[i] for i in sorted(random.Random(1).sample(range(len(pool)), limit))]


def pool_bytes(pool: list[dict[str, str]]) -> bytes:
    rows = ({"input": p["input"], "output": p["output"]} for p in pool)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def normalise(answer: str) -> str:
    return answer.strip().removesuffix(".").strip()


# -- statistics --------------------------------------------------------------------------------


def mcnemar_exact(a: list[int], b: list[int]) -> dict[str, Any]:
    """Exact McNemar test on paired 0/1 outcomes: two-sided binomial test of the discordant
    pairs (only_a: a right and b wrong; only_b: the reverse) against p = 0.5. The statistics
    are the core's (assistants/stats.py), as the promotion's gate uses them."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return {"only_a": only_a, "only_b": only_b, "p_value": binomial_p(only_a, only_b)}


# -- the cache ---------------------------------------------------------------------------------


class AnswerCache:
    """Answers per setting and test index, in the home folder, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"answers": {}, "timing": {}, "promotion": {}}
        if path.exists():
            self.data.update(json.loads(path.read_text(encoding="utf-8")))

    def answers(self, key: str) -> dict[str, Any]:
        return self.data["answers"].setdefault(key, {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


# -- the product's path ------------------------------------------------------------------------


@contextlib.contextmanager
def prompt_order(best_first: bool) -> Iterator[None]:
    """The order is measured before it is a setting: meanwhile the core's own prompt builder
    is called with the best example first (the core calls it from its threads, in this process)."""
    assistants.chat.build_prompt = functools.partial(build_prompt, best_first=best_first)  # type: ignore[assignment]
    try:
        yield
    finally:
        assistants.chat.build_prompt = build_prompt


def ensure_assistant(core: Core, name: str, setting: Setting, pool: list[dict[str, str]]) -> None:
    """The setting's assistant with the pool imported (created once per home)."""
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    try:
        assistant = core.assistants.get(ACTOR, name)
    except NotFound:
        assistant = core.assistants.create(
            ACTOR,
            name,
            demo["instructions"],
            description=f"numbers benchmark: {setting.label}",
            k=setting.k,
            selector=setting.selector,
            temperature=0.0,
            max_tokens=MAX_TOKENS,
            layout=setting.layout,
        )
    if len(core.examples.all_ids(assistant.id)) < len(pool):
        started = time.perf_counter()
        result = core.examples.import_data(ACTOR, name, "pool.jsonl", pool_bytes(pool))
        print(
            f"  {name}: imported {result.added} examples ({result.duplicates} duplicates) "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    if assistant.k != setting.k or assistant.layout != setting.layout:
        core.assistants.edit(ACTOR, name, k=setting.k, layout=setting.layout)


async def answer_all(
    core: Core,
    cache: AnswerCache,
    name: str,
    setting: Setting,
    test: list[dict[str, str]],
    indices: list[int],
) -> None:
    """Ask the assistant every test item not answered yet; cache as we go."""
    done = cache.answers(setting.key)
    todo = [i for i in indices if str(i) not in done]
    if not todo:
        return
    timing = cache.data["timing"].setdefault(setting.key, {"seconds": 0.0, "asked": 0})
    print(f"- {setting.label}: {len(todo)} to ask ({len(indices) - len(todo)} cached)", flush=True)
    started = time.perf_counter()
    since_save = 0
    for n, i in enumerate(todo, 1):
        # The conversation's seed (random selection) is drawn from `random`: fixing it per
        # item makes random k-shot reproducible, and pairs the same draw across reruns.
        random.seed(f"{setting.key}:{i}")
        t0 = time.perf_counter()
        reply = await core.chat.ask(ACTOR, name, test[i]["input"])
        done[str(i)] = {
            "answer": reply.text,
            "examples": [e.input for e in reply.examples],
            "latency_ms": round(reply.latency_ms, 1),
            "prompt_tokens": reply.prompt_tokens,
        }
        timing["seconds"] += time.perf_counter() - t0
        timing["asked"] += 1
        since_save += 1
        if since_save >= SAVE_EVERY or n == len(todo):
            cache.save()
            since_save = 0
        if n % 50 == 0 or n == len(todo):
            rate = n / (time.perf_counter() - started)
            hits = sum(
                normalise(done[str(j)]["answer"]) == test[j]["output"]
                for j in indices
                if str(j) in done
            )
            print(
                f"  {setting.label}: {n}/{len(todo)}, {rate:.2f} answers/s, "
                f"{hits}/{len(done)} right so far",
                flush=True,
            )


async def promote(
    core: Core,
    cache: AnswerCache,
    name: str,
    hyperparameters: dict[str, Any],
    started: asyncio.Event,
    with_examples: bool,
) -> str:
    """Train (or reuse) the promoted model of `name` through the fine-tuning API; switch to it.
    `started` is set once the job exists (or a finished one is reused)."""
    try:
        promotion = core.promotions.latest(ACTOR, name)
    except NotFound:
        promotion = None
    if promotion is None or promotion.job_id is None or promotion.status in ("failed", "cancelled"):
        promotion = await core.promotions.start(
            ACTOR, name, hyperparameters=hyperparameters, with_examples=with_examples
        )
        cache.data["promotion"] = {
            "job_id": promotion.job_id,
            "hyperparameters": hyperparameters,
            "dataset": promotion.dataset_stats,
            "started": time.time(),
        }
        cache.save()
        print(f"  promotion started: job {promotion.job_id}, {promotion.dataset_stats}", flush=True)
    started.set()
    record = cache.data["promotion"]
    if promotion.status != "succeeded":
        last_print = [0.0]

        async def on_progress(step: Step) -> None:
            # Every message, but metrics at most every 30 s (one per step would flood the log).
            now = time.time()
            if step.metrics and now - last_print[0] < 30:
                return
            last_print[0] = now
            stamp = time.strftime("%H:%M:%S")
            print(f"  [{stamp}] {step.promotion.status}: {step.message}", flush=True)

        promotion = await core.promotions.follow(ACTOR, name, on_progress, poll_seconds=5.0)
        record["finished"] = time.time()
    if promotion.status != "succeeded":
        raise RuntimeError(f"The promotion ended {promotion.status}: {promotion.error}")
    client = await core.providers.client(promotion.provider)
    job = await client.fine_tuning.jobs.retrieve(promotion.job_id or "")
    events = await client.fine_tuning.jobs.list_events(promotion.job_id or "", limit=100)
    losses = [e.data for e in events.data if e.type == "metrics" and e.data]
    record.update(
        {
            "fine_tuned_model": promotion.fine_tuned_model,
            "trained_tokens": job.trained_tokens,
            "job_created_at": job.created_at,
            "job_finished_at": job.finished_at,
            "hyperparameters_resolved": job.hyperparameters.model_dump()
            if job.hyperparameters
            else None,
            "last_metrics": losses[0] if losses else None,
        }
    )
    cache.save()
    core.promotions.switch(ACTOR, name, force=True)  # the benchmark measures it either way
    return promotion.fine_tuned_model or ""


# -- the report --------------------------------------------------------------------------------


def outcomes(cache: AnswerCache, setting: Setting, test, indices) -> list[int]:
    done = cache.answers(setting.key)
    return [int(normalise(done[str(i)]["answer"]) == test[i]["output"]) for i in indices]


def items(cache: AnswerCache, setting: Setting, test, indices) -> list[dict[str, Any]]:
    """Every test item's outcome under one setting, for reading the answers, not just counts."""
    done = cache.answers(setting.key)
    out = []
    for i in indices:
        answer = done[str(i)]["answer"]
        out.append(
            {
                "input": test[i]["input"],
                "lang": test[i]["lang"],
                "expected": test[i]["output"],
                "answer": answer,
                "correct": normalise(answer) == test[i]["output"],
                "examples": done[str(i)]["examples"],
            }
        )
    return out


def report(
    cache: AnswerCache,
    settings: list[Setting],
    k_values: list[int],
    test: list[dict[str, str]],
    indices: list[int],
    meta: dict[str, Any],
) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": meta, "settings": {}, "tests": {}}
    hits_of: dict[str, list[int]] = {}
    langs = sorted({test[i]["lang"] for i in indices})
    for s in settings:
        hits = outcomes(cache, s, test, indices)
        hits_of[s.key] = hits
        low, high = wilson(sum(hits), len(hits))
        per_lang: dict[str, float] = {}
        for lang in langs:
            own = [h for h, i in zip(hits, indices, strict=True) if test[i]["lang"] == lang]
            per_lang[lang] = sum(own) / len(own)
        timing = cache.data["timing"].get(s.key, {})
        results["settings"][s.key] = {
            "label": s.label,
            "selector": s.selector,
            "k": s.k,
            "fine_tuned": s.tuned,
            "layout": s.layout,
            "best_first": s.best_first,
            "correct": sum(hits),
            "n": len(hits),
            "accuracy": sum(hits) / len(hits),
            "ci95": [low, high],
            "per_language": per_lang,
            "seconds_per_answer": (timing["seconds"] / timing["asked"])
            if timing.get("asked")
            else None,
            "outcomes": hits,
            "items": items(cache, s, test, indices),
        }
    results["tests"] = paired_tests(settings, hits_of)
    tests = results["tests"]
    few = [s for s in settings if not s.tuned]
    best = max(few, key=lambda s: (sum(hits_of[s.key]), -s.k))
    results["best_few_shot"] = best.key
    for s in settings:
        if s.tuned:
            tests[f"{s.key} vs {best.key}"] = mcnemar_exact(hits_of[s.key], hits_of[best.key])
    results["goals"] = goals(results, k_values, best.key)
    return results


def paired_tests(settings: list[Setting], hits_of: dict[str, list[int]]) -> dict[str, Any]:
    """McNemar between settings that differ in one thing: the selector (retrieved vs random,
    covering vs retrieved), the layout (each against the ones before it in --layouts, same
    selector and k), the order (best first vs best last)."""
    few = {(s.selector, s.k, s.layout, s.best_first): s.key for s in settings if not s.tuned}
    layouts = list(dict.fromkeys(s.layout for s in settings if not s.tuned))
    tests: dict[str, Any] = {}

    def pair(a: str | None, b: str | None) -> None:
        if a and b:
            tests[f"{a} vs {b}"] = mcnemar_exact(hits_of[a], hits_of[b])

    for (selector, k, layout, first), key in few.items():
        if k == 0:
            continue
        if selector == "similarity":
            pair(key, few.get(("random", k, layout, first)))
        if selector == "coverage":
            pair(key, few.get(("similarity", k, layout, first)))
        for earlier in layouts[: layouts.index(layout)]:
            pair(key, few.get((selector, k, earlier, first)))
        if first:
            pair(key, few.get((selector, k, layout, False)))
    return tests


def goals(results: dict[str, Any], k_values: list[int], best: str) -> dict[str, Any]:
    acc = {k: v["accuracy"] for k, v in results["settings"].items()}
    tests = results["tests"]
    retrieved = {}
    for k in (k for k in k_values if k >= 3):
        t = tests.get(f"retrieved-k{k} vs random-k{k}")
        if t is None:
            continue  # random or the turns layout not measured in this run
        retrieved[f"k={k}"] = acc[f"retrieved-k{k}"] > acc[f"random-k{k}"] and t["p_value"] < 0.05
    tuned = {}
    for name, t in tests.items():
        key = name.split(" vs ")[0]
        if name.endswith(f" vs {best}") and results["settings"][key]["fine_tuned"]:
            tuned[key] = acc[key] > acc[best] and t["p_value"] < 0.05
    return {
        "retrieved_beats_random_k>=3": retrieved,
        "retrieved_goal_met": bool(retrieved) and all(retrieved.values()),
        "promoted_beats_best_few_shot": tuned,
        "promoted_goal_met": bool(tuned) and any(tuned.values()),
    }


def print_table(results: dict[str, Any]) -> None:
    rows = results["settings"]
    print()
    print(f"{'setting':<40} {'correct':>9} {'accuracy':>9}  {'95% CI':<15} {'s/answer':>8}")
    for r in rows.values():
        low, high = r["ci95"]
        secs = f"{r['seconds_per_answer']:.2f}" if r["seconds_per_answer"] else "-"
        print(
            f"{r['label']:<40} {r['correct']:>4}/{r['n']:<4} {r['accuracy']:>8.1%}  "
            f"{low:>6.1%}-{high:<7.1%} {secs:>8}"
        )
    print("\nMcNemar (exact), a vs b: only a right / only b right, two-sided p")
    for name, t in results["tests"].items():
        print(f"  {name:<56} {t['only_a']:>3} / {t['only_b']:<3}  p = {t['p_value']:.2g}")
    main = main_settings(results)
    langs = sorted(next(iter(rows.values()))["per_language"])
    print("\nper language: " + " ".join(f"{lang:>5}" for lang in langs))
    for key in main:
        r = rows[key]
        cells = " ".join(f"{r['per_language'][lang]:>5.0%}" for lang in langs)
        print(f"  {r['label']:<38}{cells}")
    g = results["goals"]
    print(f"\ngoal retrieved > random at k>=3 (p<0.05): {g['retrieved_beats_random_k>=3']}")
    print(f"goal promoted > best few-shot ({results['best_few_shot']}): "
          f"{g['promoted_beats_best_few_shot']}")  # fmt: skip


def main_settings(results: dict[str, Any]) -> list[str]:
    rows = results["settings"]
    wanted = ["zero-shot", "random-k3", "retrieved-k3", "covering-k3", results["best_few_shot"]]
    wanted += [k for k, r in rows.items() if r["fine_tuned"]]
    return list(dict.fromkeys(k for k in wanted if k in rows))


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results["settings"].values())
    labels = [r["label"] for r in rows]
    acc = [100 * r["accuracy"] for r in rows]
    err = [  # never below 0: at 0 right the interval's end can round a hair above the point
        [max(0.0, 100 * (r["accuracy"] - r["ci95"][0])) for r in rows],
        [max(0.0, 100 * (r["ci95"][1] - r["accuracy"])) for r in rows],
    ]
    colours = [
        "#7f7f7f"
        if r["k"] == 0 and not r["fine_tuned"]
        else "#d62728"
        if r["fine_tuned"]
        else "#1f77b4"
        if r["selector"] == "similarity"
        else "#2ca02c"
        if r["selector"] == "coverage"
        else "#ff7f0e"
        for r in rows
    ]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, acc, xerr=err, color=colours, capsize=3)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 100)
    ax.set_xlabel("exact-match accuracy (%), 95% Wilson interval")
    meta = results["meta"]
    ax.set_title(
        f"Number words -> digits, SmolLM2-135M, {meta['test_items']} test items, "
        f"{meta['languages']} languages",
        fontsize=10,
    )
    for yi, r in zip(y, rows, strict=True):
        ax.text(100 * r["ci95"][1] + 1, yi, f"{100 * r['accuracy']:.1f}%", va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = load_jsonl(Path(args.pool))
    test = load_jsonl(Path(args.test))
    indices = pick_test(test, args.limit)
    k_values = sorted({int(k) for k in args.k_values.split(",") if k.strip()})
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="fewtune-numbers-"))
    print(f"FEWTUNE_HOME {home} (rerun with --home {home} to resume)", flush=True)
    os.environ["FEWTUNE_HOME"] = str(home)
    started = time.time()
    core = Core.open(home)
    cache = AnswerCache(home / "benchmark_answers.json")
    fingerprint = data_fingerprint(pool, test)
    if cache.data.setdefault("data", fingerprint) != fingerprint:
        core.close()
        raise BadData(f"{home} holds answers for other --pool/--test data; use a fresh --home.")
    layouts = tuple(args.layouts)
    settings = few_shot_settings(k_values, layouts, tuple(args.selectors), tuple(args.best_first))
    phases: dict[str, float] = {}
    training: asyncio.Task[str] | None = None
    tuned: list[Setting] = []
    try:
        if not args.skip_promotion:
            # The promoted assistant is made and its job started before anything is asked, so
            # no benchmark conversation can reach its dataset. By default the job runs to the
            # end first: on a 2-core CPU, training beside answering made each training step
            # about 5x slower (measured). --overlap answers the few-shot settings meanwhile.
            train_pool = pick_train(pool, args.train_limit)
            tag = f"tuned-e{args.epochs}-n{len(train_pool)}"
            if args.train_with_examples:
                tag += "-served"
            tuned_name = f"numbers-{tag}"
            tuned = tuned_settings(tag, layouts[0])
            # Trained with examples, it holds the hybrid's k while its dataset is built, so each
            # training chat carries the examples it retrieves (assistants/dataset.py).
            ensure_assistant(core, tuned_name, tuned[int(args.train_with_examples)], train_pool)
            hyperparameters: dict[str, Any] = {
                "n_epochs": args.epochs,
                "learning_rate_multiplier": args.lr,
            }
            if args.batch_size:
                hyperparameters["batch_size"] = args.batch_size
            job_started = asyncio.Event()
            training = asyncio.create_task(
                promote(
                    core,
                    cache,
                    tuned_name,
                    hyperparameters,
                    job_started,
                    args.train_with_examples,
                )
            )
            waiter = asyncio.create_task(job_started.wait())
            await asyncio.wait([training, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not args.overlap or training.done():
                await training  # raises here if the job could not even start
        t0 = time.time()
        for s in settings:
            name = f"numbers-{s.key}"
            ensure_assistant(core, name, s, pool)
            with prompt_order(s.best_first):
                await answer_all(core, cache, name, s, test, indices)
        phases["few_shot_s"] = time.time() - t0
        if training is not None:
            t0 = time.time()
            model = await training
            phases["waiting_for_training_s"] = time.time() - t0
            print(f"- promoted to {model}", flush=True)
            t0 = time.time()
            for s in tuned:
                ensure_assistant(core, tuned_name, s, train_pool)  # k=0, then the hybrid's k=3
                await answer_all(core, cache, tuned_name, s, test, indices)
            phases["fine_tuned_answers_s"] = time.time() - t0
            settings += tuned
    finally:
        await core.providers.close()
        core.close()
    meta = {
        "home": str(home),
        "test_items": len(indices),
        "pool_items": len(pool),
        "pool": str(args.pool),
        "test": str(args.test),
        "languages": len({test[i]["lang"] for i in indices}),
        "k_values": k_values,
        "layouts": list(layouts),
        "selectors": list(args.selectors),
        "best_first": list(args.best_first),
        "max_tokens": MAX_TOKENS,
        "overlap": args.overlap,
        "temperature": 0.0,
        "model": "local:SmolLM2-135M-Instruct",
        "promotion": cache.data.get("promotion") or None,
        "wall_seconds_this_run": round(time.time() - started, 1),
        "phases_this_run": {k: round(v, 1) for k, v in phases.items()},
        "answer_seconds": {k: round(v["seconds"], 1) for k, v in cache.data["timing"].items()},
    }
    return report(cache, settings, k_values, test, indices, meta)


def choices(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated list of names from `allowed`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        wrong = [n for n in names if n not in allowed]
        if wrong or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use a comma-separated list of {', '.join(allowed)}"
            )
        return list(dict.fromkeys(names))

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default=str(DATA / "numbers_pool.jsonl"), help="JSONL examples")
    parser.add_argument("--test", default=str(DATA / "numbers_test.jsonl"), help="JSONL to ask")
    parser.add_argument("--limit", type=int, default=None, help="test items (default: all)")
    parser.add_argument(
        "--k-values", default="0,1,3,5,8", help="k for the few-shot settings (0: zero-shot)"
    )
    parser.add_argument(
        "--layouts",
        type=choices(LAYOUTS),
        default=[DEFAULT_LAYOUT],
        help=f"prompt layouts, comma-separated, from {', '.join(LAYOUTS)}; the first is also "
        f"the promoted assistant's (default: {DEFAULT_LAYOUT}, the one new assistants get)",
    )
    parser.add_argument(
        "--selectors",
        type=choices(tuple(SELECTOR_WORDS)),
        default=list(SELECTOR_WORDS),
        help="selectors for each k, comma-separated (default: random,similarity,coverage)",
    )
    parser.add_argument(
        "--best-first",
        type=choices(LAYOUTS),
        default=[],
        help="layouts also measured with the best example first (default: none; best last)",
    )
    parser.add_argument("--skip-promotion", action="store_true", help="few-shot settings only")
    parser.add_argument(
        "--epochs",
        type=lambda text: text if text == "auto" else int(text),
        default=1,
        help='n_epochs of the fine-tuning job: a number, or "auto" (from the training size)',
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the API's auto")
    parser.add_argument("--lr", type=float, default=2.0, help="learning_rate_multiplier")
    parser.add_argument(
        "--train-limit", type=int, default=None, help="pool items to train on (quick runs)"
    )
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="answer the few-shot settings while the job trains (default: train first)",
    )
    parser.add_argument(
        "--train-with-examples",
        action="store_true",
        help="training chats carry their 3 retrieved examples, as the hybrid serves them "
        "(default: bare chats, as the figures in docs/benchmarks.md were made)",
    )
    parser.add_argument("--home", default=None, help="FEWTUNE_HOME to use or resume")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument("--chart", default=str(CHART), help="where the PNG goes")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        results = asyncio.run(run(args))
    except BadData as exc:
        parser.error(str(exc))
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    chart(results, Path(args.chart))
    print_table(results)
    print(f"\nresults: {out}\nchart: {args.chart}")


if __name__ == "__main__":
    main()
