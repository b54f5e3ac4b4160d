"""The knowledge benchmark's question set, generated from documents (by default the repository's
own: README.md and docs/*.md), each question's answer lying in a known chunk.

    .venv/bin/python scripts/make_knowledge_questions.py            # bench/data/knowledge/
    .venv/bin/python scripts/make_knowledge_questions.py --docs my.md other.md --out q.jsonl

Method (a cloze set, in the manner of the inverse cloze task of Lee et al., 2019, with the
sentence kept in its passage): each document is read and chunked by the product itself
(`assistants.knowledge.extract` and `chunks`, the embedder's own word-piece count), so the chunks
are the ones an assistant holding the file has. A prose sentence of 6 to 45 words with one to
three numbers becomes a question: one of its numbers (seeded choice; not in code, not part of a
name, a version or a date, not an issue's or a step's number, and written nowhere else in the
sentence) is replaced by "how many" (before a plural within two words), "what percentage" or
"what number", and the sentence ends in a question mark. Its answer is that number; its gold
chunks are every chunk of its file whose text holds the whole sentence. Tables, code, headings
and block quotes are left out; a question that two sentences ask with different answers is
dropped, since no reader could tell which is meant. Deterministic: the same documents and seed
give the same file.

The questions are near-verbatim (a cloze, not a paraphrase): they measure whether the index finds
the passage a question comes from and whether the model reads the answer out of it, not how well
either copes with a question worded unlike its source.

Each line: {"id", "file", "question", "answer", "sentence", "gold": [chunk positions in file]}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistants.knowledge.chunks import chunk  # noqa: E402
from assistants.knowledge.extract import extract  # noqa: E402
from storage.embeddings import Embedder  # noqa: E402

OUT = ROOT / "bench" / "data" / "knowledge" / "questions.jsonl"
MIN_WORDS, MAX_WORDS = 6, 45
MAX_NUMBERS = 3  # in one sentence; more is a list of figures, not a sentence to ask about

_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*)")
# A number standing alone: not inside a word, a name (SmolLM2-135M), a version (4.32.5), a path
# or an issue reference (#14); a decimal point or thousands comma inside it belongs to it.
_NUMBER = re.compile(r"(?<![\w.\-/#`~^+])(\d+(?:[.,]\d+)?)(?![\w\-/`+]|\.\d|,\d)")
_REFERENCE = re.compile(r"\b(?:issues?|stops?|steps?|items?|[Ss]ection)\s+$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")


def normalized(text: str) -> str:
    """Whitespace folded to single spaces: how a sentence is matched against a chunk."""
    return " ".join(text.split())


def prose_sentences(text: str) -> Iterator[str]:
    """The sentences of a section's prose: tables, code blocks and headings left out."""
    in_fence = False
    paragraph: list[str] = []
    for line in [*text.split("\n"), ""]:
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        skip = (
            in_fence
            or not stripped
            or stripped.startswith(("|", "#", ">", "<"))
            or line.startswith(("    ", "\t"))
        )
        if _BULLET.match(line):  # a list item is a paragraph of its own
            yield from _split(paragraph)
            paragraph = [_BULLET.sub("", line)]
            continue
        if skip:
            yield from _split(paragraph)
            paragraph = []
            continue
        paragraph.append(stripped)
    yield from _split(paragraph)


def _split(lines: list[str]) -> Iterator[str]:
    if lines:
        yield from (s for s in _SENTENCE_END.split(" ".join(lines)) if s)


def question_of(sentence: str, pick: random.Random) -> tuple[str, str] | None:
    """(question, answer) for a sentence that holds a number, or None: one of its numbers (at
    most MAX_NUMBERS; chosen by `pick`) is asked, the others stay as they are."""
    if not sentence.endswith((".", "!", "?")):
        return None  # a fragment (a caption, a line cut short)
    words = _LINK.sub(r"\1", _CODE_SPAN.sub(lambda m: m.group(0).strip("`"), sentence))
    words = _EMPHASIS.sub("", words)
    if not MIN_WORDS <= len(words.split()) <= MAX_WORDS:
        return None
    code = " ".join(_CODE_SPAN.findall(sentence))
    numbers = list(_NUMBER.finditer(words))
    askable = [
        n
        for n in numbers
        if not _REFERENCE.search(words[: n.start()])  # issue 12, stop 17: not a fact to answer
        and n.group(1) not in code  # a number in code is an identifier or a command
        and words.count(n.group(1)) == 1  # nowhere else in the question, not even in a name
    ]
    if not askable or len(numbers) > MAX_NUMBERS:
        return None
    number = pick.choice(askable)
    after = words[number.end() :]
    following = [w.strip(".,;:)") for w in after.split()[:2]]  # "20 files", "200 word pieces"
    if after.startswith("%"):
        ask, after = "what percentage", after[1:]
    elif any(w.endswith("s") and not w.endswith(("ss", "us", "is")) for w in following):
        ask = "how many"
    else:
        ask = "what number"
    question = f"{words[: number.start()]}{ask}{after}".rstrip(".!? ") + "?"
    return question[0].upper() + question[1:], number.group(1).replace(",", "")


def questions(paths: list[Path], embedder: Embedder, root: Path, seed: int) -> list[dict]:
    """Every question the documents give, in document order, duplicates and ambiguities out.
    Sentences are read from whole sections (a code block may cross a chunk's border), then
    looked up in the chunks."""
    pick = random.Random(seed)
    found: list[dict] = []
    for path in paths:
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        sections = extract(path.name, path.read_bytes()).sections
        texts = [normalized(p.text) for p in chunk(sections, embedder.count_tokens)]
        seen: set[str] = set()
        for section in sections:
            for sentence in map(normalized, prose_sentences(section.text)):
                asked = None if sentence in seen else question_of(sentence, pick)
                seen.add(sentence)
                gold = [i for i, text in enumerate(texts) if sentence in text] if asked else []
                if asked and gold:
                    question, answer = asked
                    found.append(
                        {"file": name, "question": question, "answer": answer,
                         "sentence": sentence, "gold": gold}
                    )  # fmt: skip
    answers: dict[str, set[str]] = defaultdict(set)
    for item in found:
        answers[item["question"].lower()].add(item["answer"])
    kept, asked_once = [], set()
    for item in found:
        key = item["question"].lower()
        if len(answers[key]) == 1 and key not in asked_once:
            asked_once.add(key)
            kept.append(item)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", nargs="+", type=Path, help="default: README.md and docs/*.md")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--max", type=int, default=150, help="questions kept (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = args.docs or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    every = questions([p.resolve() for p in paths], Embedder(), ROOT, args.seed)
    rng = random.Random(args.seed)
    kept = sorted(rng.sample(range(len(every)), min(args.max, len(every))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        for n, i in enumerate(kept, 1):
            out.write(json.dumps({"id": n, **every[i]}, ensure_ascii=False) + "\n")
    per_file: dict[str, int] = defaultdict(int)
    for i in kept:
        per_file[every[i]["file"]] += 1
    print(f"{len(kept)} of {len(every)} questions from {len(paths)} documents -> {args.out}")
    for name, n in sorted(per_file.items()):
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
