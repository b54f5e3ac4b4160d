"""Make fewtune's number-words data: the article's few-shot example, words -> digits.

Run ``python scripts/make_number_words.py [--out-dir DIR]`` (DIR defaults to the repository root).
It writes, deterministically (same bytes on every run with the same num2words version):

- ``assistants/demo/numbers.jsonl``: the demo assistant's examples, ``{"input", "output"}``;
- ``assistants/demo/numbers.json``: the demo assistant's definition;
- ``bench/data/numbers_pool.jsonl``: the benchmark's example pool (retrieval and training);
- ``bench/data/numbers_test.jsonl``: the benchmark's held-out test set;
  both with lines ``{"input", "output", "lang"}``.

How the data is made and split:

1. Every number 0-100 is written in words by num2words in each of ``LANGUAGES``; the text is
   NFC-normalised and, for Arabic, the conjunction "و" is joined to the word after it
   ("واحد وعشرون", the standard spelling; num2words writes "واحد و عشرون").
2. Identical spellings in two languages (e.g. "zero" in en/it/pt/pl, "elf" in de/nl) are kept
   once, under the first language in ``LANGUAGES`` order, so every input text is unique.
3. Within each language the remaining numbers are ordered by ``sha256(f"{SEED}:{lang}:{n}")`` and
   the first ``TEST_FRACTION`` of them go to the test set, the rest to the pool. So the split is
   stratified by language, disjoint by (language, number) and by input text, and an item's side
   never depends on the other languages or on Python's random module.
4. The demo examples are ``DEMO_PER_LANGUAGE`` pool items per language (the first in the same hash
   order, seeded with ``DEMO_SEED``), so no test input is ever shown to the demo assistant.

Languages were checked by eye; left out: tr (num2words glues compounds, "yirmibir" for "yirmi
bir"), te (100 is "ఒకటి వంద", "one hundred" word for word), kn (21 is "ಇಪ್ಪತ್ತ್ ಒಂದು" but 71
is "ಎಪ್ಪತ್ತೊಂದು"), hi and el (not implemented in num2words 0.5.14), uk and fa (close to ru and ar).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from num2words import num2words

# Latin first so that shared spellings stay with the better-known language; then one language per
# non-Latin script: Cyrillic, Arabic, Hebrew, Bengali, Thai, Japanese kanji, Korean hangul.
LANGUAGES: tuple[str, ...] = (
    "en", "fr", "de", "es", "it", "pt", "nl", "pl",
    "ru", "ar", "he", "bn", "th", "ja", "ko",
)  # fmt: skip
NUMBERS = range(0, 101)
SEED = "fewtune-numbers-v1"
TEST_FRACTION = 0.25
DEMO_SEED = "fewtune-numbers-demo-v1"
DEMO_PER_LANGUAGE = 14
STARTER_LANGUAGES: tuple[str, ...] = ("fr", "ru", "ja", "ar")

DEMO_JSONL = Path("assistants/demo/numbers.jsonl")
DEMO_JSON = Path("assistants/demo/numbers.json")
POOL_JSONL = Path("bench/data/numbers_pool.jsonl")
TEST_JSONL = Path("bench/data/numbers_test.jsonl")

INSTRUCTIONS = (
    "You turn a number written in words, in any language or script, into digits. "
    "Answer with only the number in digits, for example 42: no words, no punctuation, "
    "no explanation."
)
TWIN_DESCRIPTION = (
    "The numbers assistant promoted: the same examples, answered by its own LoRA adapter "
    "(assistants/demo/adapter/)."
)
DESCRIPTION = (
    "Turns number words in many languages and scripts (French, Russian, Arabic, Japanese, ...) "
    "into digits: the article's few-shot example."
)


@dataclass(frozen=True)
class NumberWord:
    """One number written in words in one language."""

    input: str
    output: str
    lang: str

    @property
    def number(self) -> int:
        return int(self.output)


def words(n: int, lang: str) -> str:
    """The number ``n`` in words in ``lang``, cleaned as the module docstring says."""
    text = unicodedata.normalize("NFC", " ".join(num2words(n, lang=lang).split()))
    if lang == "ar":
        text = text.replace(" و ", " و")
    return text


def build_records() -> list[NumberWord]:
    """Every number in every language, each input text once (first language wins)."""
    seen: set[str] = set()
    records = []
    for lang in LANGUAGES:
        for n in NUMBERS:
            text = words(n, lang)
            if text in seen:
                continue
            seen.add(text)
            records.append(NumberWord(input=text, output=str(n), lang=lang))
    return records


def _rank(seed: str, record: NumberWord) -> str:
    return hashlib.sha256(f"{seed}:{record.lang}:{record.output}".encode()).hexdigest()


def _sort_key(record: NumberWord) -> tuple[int, int]:
    return LANGUAGES.index(record.lang), record.number


def split(records: list[NumberWord]) -> tuple[list[NumberWord], list[NumberWord]]:
    """(pool, test): per language, the first TEST_FRACTION in hash order are held out."""
    pool: list[NumberWord] = []
    test: list[NumberWord] = []
    for lang in LANGUAGES:
        ranked = sorted((r for r in records if r.lang == lang), key=lambda r: _rank(SEED, r))
        cut = round(len(ranked) * TEST_FRACTION)
        test.extend(ranked[:cut])
        pool.extend(ranked[cut:])
    return sorted(pool, key=_sort_key), sorted(test, key=_sort_key)


def demo_examples(pool: list[NumberWord]) -> list[NumberWord]:
    """DEMO_PER_LANGUAGE pool items per language, in a stable seeded choice."""
    chosen: list[NumberWord] = []
    for lang in LANGUAGES:
        ranked = sorted((r for r in pool if r.lang == lang), key=lambda r: _rank(DEMO_SEED, r))
        chosen.extend(ranked[:DEMO_PER_LANGUAGE])
    return sorted(chosen, key=_sort_key)


def starters(pool: list[NumberWord], demo: list[NumberWord]) -> list[str]:
    """One compound number per starter language that the demo does not already answer."""
    shown = {r.input for r in demo}
    result = []
    for lang in STARTER_LANGUAGES:
        candidates = [r for r in pool if r.lang == lang and r.number > 20 and r.input not in shown]
        result.append(min(candidates, key=lambda r: _rank(DEMO_SEED, r)).input)
    return result


def _jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def render() -> dict[Path, str]:
    """Every file's relative path and text."""
    pool, test = split(build_records())
    demo = demo_examples(pool)
    definition = {
        "name": "numbers",
        "description": DESCRIPTION,
        "instructions": INSTRUCTIONS,
        "starters": starters(pool, demo),
        "k": 4,
        "selector": "similarity",
        "temperature": 0,
        "history": 0,
        "layout": "turns",  # no other layout measured better (docs/benchmarks.md)
        "max_tokens": 16,  # a number is a few tokens; a reply that goes on is wrong anyway
        # The promoted twin (assistants/demo.py): the same examples, its adapter, coverage.
        "twin": {
            "name": "numbers-tuned",
            "description": TWIN_DESCRIPTION,
            "selector": "coverage",
            "starters": [],
        },
    }
    return {
        DEMO_JSONL: _jsonl([{"input": r.input, "output": r.output} for r in demo]),
        DEMO_JSON: json.dumps(definition, ensure_ascii=False, indent=2) + "\n",
        POOL_JSONL: _jsonl([r.__dict__ for r in pool]),
        TEST_JSONL: _jsonl([r.__dict__ for r in test]),
    }


def write_all(out_dir: Path) -> list[Path]:
    """Write every file under ``out_dir``; return the paths written."""
    written = []
    for relative, text in render().items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # newline="" keeps "\n" on every platform, so the bytes are the same everywhere.
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="folder to write under (default: the repository root)",
    )
    args = parser.parse_args(argv)
    try:
        paths = write_all(args.out_dir)
    except OSError as exc:
        print(f"Cannot write the number-words files under {args.out_dir}: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
