"""The knowledge benchmark's question set (scripts/make_knowledge_questions.py) and its answer
rule (bench/knowledge_benchmark.py), without a chat model: which sentences become questions, that
each question's gold chunk holds its sentence, that ambiguous questions are dropped, and that a
reply counts as right only when its own first new number is the answer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from script_modules import load

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "bench" / "data" / "knowledge" / "questions.jsonl"


make = load("scripts/make_knowledge_questions.py")
bench = load("bench/knowledge_benchmark.py")


def ask(sentence: str) -> tuple[str, str] | None:
    return make.question_of(sentence, random.Random(0))


@pytest.mark.parametrize(
    ("sentence", "question", "answer"),
    [
        (
            "Each assistant keeps 20 files of knowledge at most.",
            "Each assistant keeps how many files of knowledge at most?",
            "20",
        ),
        (
            "The twin is right 30.5% of the time on the test words.",
            "The twin is right what percentage of the time on the test words?",
            "30.5",
        ),
        (
            "A reply longer than 2,000 characters is split at line ends.",
            "A reply longer than how many characters is split at line ends?",
            "2000",
        ),
        (
            "The bot answers with exit code 1 when the input is wrong.",
            "The bot answers with exit code what number when the input is wrong?",
            "1",
        ),
    ],
)
def test_a_sentence_with_a_number_becomes_its_question(sentence, question, answer):
    assert ask(sentence) == (question, answer)


@pytest.mark.parametrize(
    "sentence",
    [
        "The embedded SmolLM2-135M-Instruct model answers here fast enough.",  # in a name
        "Run `fewtune serve --port 8000` to start the local server now.",  # in code
        "This was fixed in issue 12 and never came back since then.",  # a reference
        "Version 4.32.5 of the fuzzer is pinned in the constraints file.",  # a version
        "The run on 2026-12-02 took about as long as the one before it.",  # a date
        "Between 10 and 10 seconds pass before the model starts answering.",  # twice
        "Four words only.",  # too short, no number
        "The table lists 3 settings and 4 limits and 5 rules and 6 more",  # no end: a fragment
    ],
)
def test_sentences_that_make_no_fair_question_are_left_out(sentence):
    assert ask(sentence) is None


DOC = """# Limits

Each assistant holds at most 20 knowledge files of its own.

```
A line in code with 42 things in it that is not prose at all.
```

| setting | value |
| max_files | 20 |

## Chunks

A chunk holds at most 200 word pieces of the embedder's input.
A prompt takes 4 chunks of knowledge for every message it answers.

## Again

A prompt takes 5 chunks of knowledge for every message it answers.
"""


def test_questions_come_from_prose_and_name_the_chunk_that_holds_them(tmp_path, embedder):
    doc = tmp_path / "guide.md"
    doc.write_text(DOC, encoding="utf-8")
    found = make.questions([doc], embedder, tmp_path, seed=0)
    by_answer = {q["answer"]: q for q in found}
    assert set(by_answer) == {"20", "200"}  # not code's 42, not the table's 20, not the 4/5 pair
    pieces = make.chunk(make.extract("guide.md", DOC.encode()).sections, embedder.count_tokens)
    for q in found:
        assert q["file"] == "guide.md"
        assert q["gold"] and all(
            q["sentence"] in make.normalized(pieces[i].text) for i in q["gold"]
        )
        assert q["answer"] not in q["question"]
    assert by_answer["200"]["question"] == (
        "A chunk holds at most how many word pieces of the embedder's input?"
    )


def test_the_shipped_question_set_is_well_formed():
    items = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    assert len(items) >= 100
    assert [q["id"] for q in items] == list(range(1, len(items) + 1))
    for q in items:
        assert (ROOT / q["file"]).is_file(), q["file"]
        assert q["question"].endswith("?") and q["answer"] not in q["question"]
        assert q["answer"] in q["sentence"].replace(",", "")
        assert q["gold"] and all(isinstance(i, int) and i >= 0 for i in q["gold"])
    assert len({q["question"].lower() for q in items}) == len(items)


@pytest.mark.parametrize(
    ("reply", "right"),
    [
        ("It keeps 20 files [1].", True),
        ("It keeps 20.0 files.", True),
        ("At most 2,000 files.", False),
        ("It keeps 10 files, not 20.", False),  # another number first
        ("It keeps files, as [1] says: 20.", True),  # a citation is not a number stated
        ("It keeps 4 of them, per message.", False),  # only the question's own figure
        ("It keeps many files.", False),
    ],
)
def test_a_reply_is_right_when_its_first_new_number_is_the_answer(reply, right):
    question = "Per message 4 chunks are read; each assistant keeps how many files?"
    assert bench.answered(reply, question, "20") is right
