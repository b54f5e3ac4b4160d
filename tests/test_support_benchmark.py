"""The support benchmark's data (scripts/make_support_assistant.py) and the broken adapter's
training chats (bench/support_gate.py), without a chat model: the generator is deterministic and
writes what is committed, every answer is in the house style with its fact, every fact is
worded several ways, no held-out question is among the examples, and the shuffled answers
really answer other questions."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from script_modules import load

from assistants import TERMINAL

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "support"


@pytest.fixture(scope="module")
def maker():
    return load("scripts/make_support_assistant.py")


@pytest.fixture(scope="module")
def bench():
    return load("bench/support_gate.py")


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _split(maker, text: str) -> tuple[str, str, str]:
    """An answer as (greeting, middle, sign-off); fails when it is not in the house style."""
    greeting = next(g for g in maker.GREETINGS if text.startswith(g + " "))
    sign_off = next(s for s in maker.SIGN_OFFS if text.endswith(" " + s))
    return greeting, text[len(greeting) + 1 : len(text) - len(sign_off) - 1], sign_off


def test_the_generator_is_deterministic_and_wrote_the_committed_files(maker):
    files = maker.generate()
    assert files == maker.generate()
    assert files != maker.generate(seed=maker.SEED + 1)
    for name, data in files.items():
        assert (DATA / name).read_bytes() == data, f"{name} differs: rerun the generator"


def test_every_answer_is_a_greeting_one_sentence_with_its_fact_and_a_sign_off(maker, bench):
    files = maker.generate()
    facts = json.loads(files["facts.json"])
    assert 25 <= len(facts) <= 40
    examples = _rows(files["examples.jsonl"])
    held_out = _rows(files["held_out.jsonl"])
    answers = [e["output"] for e in examples] + [h["messages"][1]["content"] for h in held_out]
    by_key = {f["key"]: f for f in facts}
    for text in answers:
        _, middle, _ = _split(maker, text)
        assert middle in {s for f in facts for s in f["sentences"]}
        assert middle.endswith(".") and "." not in middle[:-1].replace(".example", "").replace(
            "1.", ""
        ), middle  # one sentence (decimals and the e-mail address aside)
        key = bench.fact_of(text, facts)
        assert key is not None and by_key[key]["value"] in middle
        assert len(text.split()) <= 30  # short: about 40 tokens at most
    for h in held_out:
        assert bench.fact_of(h["messages"][1]["content"], facts) == h["fact"]


def test_every_fact_is_asked_and_answered_in_several_wordings(maker, bench):
    files = maker.generate()
    facts = json.loads(files["facts.json"])
    examples = _rows(files["examples.jsonl"])
    questions, sentences = defaultdict(set), defaultdict(set)
    greetings, sign_offs = set(), set()
    for e in examples:
        key = bench.fact_of(e["output"], facts)
        greeting, middle, sign_off = _split(maker, e["output"])
        questions[key].add(e["input"])
        sentences[key].add(middle)
        greetings.add(greeting)
        sign_offs.add(sign_off)
    assert set(questions) == {f["key"] for f in facts}
    assert all(len(q) >= 2 for q in questions.values())
    assert all(len(s) >= 2 for s in sentences.values())
    assert len(greetings) >= 2 and len(sign_offs) >= 2


def test_no_held_out_question_is_among_the_examples_and_every_fact_is_held_out(maker):
    files = maker.generate()
    asked = {e["input"].casefold() for e in _rows(files["examples.jsonl"])}
    held_out = _rows(files["held_out.jsonl"])
    assert len(held_out) == maker.HELD_OUT_ITEMS
    assert not asked & {h["messages"][0]["content"].casefold() for h in held_out}
    assert {h["fact"] for h in held_out} == {f.key for f in maker.FACTS}


def test_the_broken_adapters_chats_answer_other_questions_in_the_same_prompts(core, bench):
    definition, facts, examples, _ = bench.load(DATA)
    name = definition["name"]
    core.assistants.create(TERMINAL, name, definition["instructions"], k=definition["k"])
    core.examples.import_data(TERMINAL, name, "examples.jsonl", examples)
    _, data = core.promotions.dataset(TERMINAL, name, with_examples=True)
    chats = data.train
    assert len(chats) >= 80
    # The promotion's builder put the retrieved examples in each prompt (k = 2 pairs).
    assert all(len(c["messages"]) == 1 + 2 * definition["k"] + 2 for c in chats)
    broken = bench.shuffled_answers(chats, facts, seed=42)
    assert broken == bench.shuffled_answers(chats, facts, seed=42)
    answers = [c["messages"][-1]["content"] for c in chats]
    moved = [c["messages"][-1]["content"] for c in broken]
    assert sorted(moved) == sorted(answers)  # the same answers, in the house style still
    for before, after in zip(chats, broken, strict=True):
        assert after["messages"][:-1] == before["messages"][:-1]
        own = bench.fact_of(before["messages"][-1]["content"], facts)
        assert bench.fact_of(after["messages"][-1]["content"], facts) != own
