"""Example selection: similarity, MMR, coverage, random (seeded per conversation), fixed, and
k = 0."""

from __future__ import annotations

import itertools
import json
import threading

import numpy as np
import pytest

from assistants import TERMINAL
from assistants.coverage import cover, features
from assistants.selection import NEEDS_QUERY, mmr, select

PASSWORD_NEAR_DUPLICATES = [
    "How do I reset my password?",
    "How can I reset my password?",
    "How do I reset my password, please?",
    "How to reset my password",
]
OTHERS = [
    "How do I delete my account?",
    "I cannot log in to my account.",
    "What are your opening hours?",
    "Do you ship to Canada?",
]
QUERY = "I forgot my password and cannot log in, how do I reset it?"


@pytest.fixture
def support(core):
    """An assistant with near-duplicate examples and some different ones; returns it and ids."""
    assistant = core.assistants.create(TERMINAL, "support", "Help customers.")
    ids = {}
    for text in PASSWORD_NEAR_DUPLICATES + OTHERS:
        ids[text] = core.examples.add(TERMINAL, "support", text, "answer").id
    return assistant, ids


SELECTORS = ["similarity", "mmr", "coverage", "random", "fixed"]


def run(core, assistant, selector, k, seed=0, text=QUERY):
    index = core.index()
    query = core.embedder.embed_one(text) if selector in NEEDS_QUERY else None
    return select(
        selector,
        index,
        assistant.id,
        k,
        query,
        core.examples.all_ids(assistant.id),
        seed=seed,
        text=text,
        inputs=lambda ids: core.examples.inputs(assistant.id, ids),
    )


def mean_pairwise_similarity(core, assistant_id, ids):
    vectors = core.index().vectors(assistant_id, ids)
    sims = [float(vectors[a] @ vectors[b]) for a, b in itertools.combinations(ids, 2)]
    return sum(sims) / len(sims)


def test_similarity_returns_the_most_similar_inputs_best_first(core, support):
    assistant, ids = support
    chosen = run(core, assistant, "similarity", 4)
    vectors = core.embedder.embed(PASSWORD_NEAR_DUPLICATES + OTHERS)
    exact = vectors @ core.embedder.embed_one(QUERY)
    expected = [ids[t] for t in np.array(PASSWORD_NEAR_DUPLICATES + OTHERS)[np.argsort(-exact)[:4]]]
    assert chosen.ids == expected
    assert chosen.scores == sorted(chosen.scores, reverse=True)
    assert chosen.scores[0] == pytest.approx(float(exact.max()), abs=1e-4)


def test_mmr_picks_more_diverse_examples_than_similarity(core, support):
    assistant, ids = support
    similar = run(core, assistant, "similarity", 3)
    diverse = run(core, assistant, "mmr", 3)
    assert len(diverse.ids) == 3 == len(set(diverse.ids))
    assert diverse.ids[0] == similar.ids[0]  # the most relevant one is still taken first
    duplicates = {ids[t] for t in PASSWORD_NEAR_DUPLICATES}
    assert set(similar.ids) <= duplicates  # similarity: three phrasings of one question
    assert len(set(diverse.ids) - duplicates) >= 1
    assert mean_pairwise_similarity(core, assistant.id, diverse.ids) < mean_pairwise_similarity(
        core, assistant.id, similar.ids
    )


def test_mmr_with_lambda_one_is_similarity():
    rng = np.random.default_rng(0)
    vectors = [v / np.linalg.norm(v) for v in rng.normal(size=(10, 8)).astype(np.float32)]
    scores = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.0]
    assert mmr(vectors, scores, 4, 1.0) == [0, 6, 3, 8]
    assert mmr([], [], 4, 0.5) == []
    assert len(mmr(vectors, scores, 20, 0.5)) == 10  # never more than the candidates


SEVENTIES = ["seventy-eight", "seventy-six", "seventy-five", "seventy-three", "seventy-two"]
ONES = ["twenty-one", "forty-one"]
OTHER_NUMBERS = ["sixty-seven", "eighty-four", "thirty-nine", "fifty-five", "ninety-two"]


@pytest.fixture
def numbers(core):
    """Number words: many "seventy-…", a few "…-one", none "seventy-one" itself."""
    assistant = core.assistants.create(TERMINAL, "numbers", "Write the number in digits.")
    ids = {}
    for text in SEVENTIES + ONES + OTHER_NUMBERS:
        ids[text] = core.examples.add(TERMINAL, "numbers", text, "n").id
    return assistant, ids


def test_coverage_covers_the_part_that_similarity_misses(core, numbers):
    assistant, ids = numbers
    similar = run(core, assistant, "similarity", 4, text="seventy-one")
    covering = run(core, assistant, "coverage", 4, text="seventy-one")
    seventies, ones = {ids[t] for t in SEVENTIES}, {ids[t] for t in ONES}
    assert set(similar.ids) <= seventies  # the tens four times, the units never
    assert covering.ids[0] in seventies  # the set covers both parts, one example each first
    assert covering.ids[1] in ones
    assert len(covering.ids) == 4 == len(set(covering.ids))
    assert covering.ids[0] == similar.ids[0]  # of equal cover, the more similar one
    everything = run(core, assistant, "similarity", 25, text="seventy-one")
    cosine = dict(zip(everything.ids, everything.scores, strict=True))
    assert covering.scores == pytest.approx([cosine[i] for i in covering.ids], abs=1e-6)


def test_coverage_is_deterministic(core, numbers):
    assistant, _ = numbers
    picks = {tuple(run(core, assistant, "coverage", 3, text="seventy-one").ids) for _ in range(5)}
    assert len(picks) == 1


def test_coverage_picks_only_the_assistants_own_examples(core, numbers):
    assistant, ids = numbers
    core.assistants.create(TERMINAL, "rival", "Other.")
    rival = {core.examples.add(TERMINAL, "rival", t, "n").id for t in ("seventy-one", "one")}
    chosen = run(core, assistant, "coverage", 25, text="seventy-one")
    assert set(chosen.ids) == set(ids.values())
    assert not set(chosen.ids) & rival


def test_coverage_in_a_chat_puts_the_examples_in_the_prompt(core, numbers):
    _, ids = numbers
    core.assistants.edit(TERMINAL, "numbers", selector="coverage", k=2)
    conversation = core.chat.start(TERMINAL, "numbers")
    prepared = core.chat.prepare(TERMINAL, conversation.id, "seventy-one")
    chosen = [e.input for e in prepared.examples]
    assert chosen[0] in SEVENTIES and chosen[1] in ONES
    # The best example comes last, nearest the message.
    users = [m["content"] for m in prepared.messages if m["role"] == "user"]
    assert users == [chosen[1], chosen[0], "seventy-one"]


def test_coverage_survives_export_and_import(core, numbers):
    from assistants.transfer import export_assistant, import_assistant

    core.assistants.edit(TERMINAL, "numbers", selector="coverage")
    bundle = export_assistant(core, TERMINAL, "numbers")
    assert bundle["assistant"]["selector"] == "coverage"
    copy, _ = import_assistant(core, TERMINAL, json.dumps(bundle).encode(), name="numbers-copy")
    assert copy.selector == "coverage"


def test_features_are_trigrams_of_each_word_with_its_ends_marked():
    assert features("Seventy-ONE") == features("seventy one")
    assert {"<on", "one", "ne>", "<se", "ty>"} <= features("seventy-one")
    assert features("四十四") == {"<四十", "四十四", "十四>"}
    assert features("a") == {"<a>"}
    assert features("  ,, ") == frozenset()


def test_cover_is_greedy_and_fills_up_in_shortlist_order():
    query = frozenset("abcd")
    candidates = [frozenset(part) for part in ("ab", "ab", "c", "xyz", "d")]
    assert cover(query, candidates, 3) == [0, 2, 4]  # ties go to the earlier, more similar one
    assert cover(query, candidates, 5) == [0, 2, 4, 1, 3]  # nothing left to cover: in order
    assert cover(query, [], 3) == []
    assert cover(frozenset(), candidates, 2) == [0, 1]


def test_random_is_stable_for_a_seed_and_differs_across_seeds(core, support):
    assistant, ids = support
    first = run(core, assistant, "random", 4, seed=1234)
    assert first.ids == run(core, assistant, "random", 4, seed=1234).ids
    assert set(first.ids) <= set(ids.values())
    assert len(set(first.ids)) == 4
    picks = {tuple(run(core, assistant, "random", 4, seed=seed).ids) for seed in range(8)}
    assert len(picks) > 1
    assert first.scores == [None] * 4


def test_random_is_seeded_per_conversation(core, support):
    core.assistants.edit(TERMINAL, "support", selector="random", k=3)
    conversation = core.chat.start(TERMINAL, "support")
    picks = []
    for message in ("first message", "a completely different second message"):
        prepared = core.chat.prepare(TERMINAL, conversation.id, message)
        core.chat.record(prepared, TERMINAL, {"content": "ok", "model": "local:x"})
        picks.append(sorted(e.id for e in prepared.examples))
    assert picks[0] == picks[1]
    # Other conversations have their own seeds, so some pick differently.
    others = set()
    for _ in range(6):
        other = core.chat.start(TERMINAL, "support")
        others.add(
            tuple(sorted(e.id for e in core.chat.prepare(TERMINAL, other.id, "hi").examples))
        )
    assert len(others | {tuple(picks[0])}) > 1


def test_fixed_is_the_first_k_by_id(core, support):
    assistant, ids = support
    chosen = run(core, assistant, "fixed", 3)
    assert chosen.ids == sorted(ids.values())[:3]
    core.assistants.edit(TERMINAL, "support", selector="fixed", k=2)
    conversation = core.chat.start(TERMINAL, "support")
    prepared = core.chat.prepare(TERMINAL, conversation.id, "anything at all")
    assert [e.id for e in prepared.examples] == sorted(ids.values())[:2]


@pytest.mark.parametrize("selector", SELECTORS)
def test_k_zero_gives_none(core, support, selector):
    assistant, _ = support
    assert run(core, assistant, selector, 0).ids == []
    core.assistants.edit(TERMINAL, "support", selector=selector, k=0)
    conversation = core.chat.start(TERMINAL, "support")
    prepared = core.chat.prepare(TERMINAL, conversation.id, QUERY)
    assert prepared.examples == []
    assert [m["role"] for m in prepared.messages] == ["system", "user"]


@pytest.mark.parametrize("selector", SELECTORS)
def test_k_larger_than_the_examples_gives_them_all(core, support, selector):
    assistant, ids = support
    assert sorted(run(core, assistant, selector, 25).ids) == sorted(ids.values())


def test_an_assistant_without_examples_selects_none(core):
    empty = core.assistants.create(TERMINAL, "empty", "Nothing yet.")
    for selector in SELECTORS:
        assert run(core, empty, selector, 4).ids == []


def test_concurrent_queries_are_answered_as_if_alone(core, support):
    """Queries arriving together go to chromadb as one call; each still gets its own hits."""
    assistant, _ = support
    index = core.index()
    texts = PASSWORD_NEAR_DUPLICATES + OTHERS + [QUERY]
    vectors = core.embedder.embed(texts)
    alone = {
        (i, n, full): index.query(assistant.id, vectors[i], n, with_vectors=full)
        for i in range(len(texts))
        for n, full in ((3, False), (5, True))
    }
    together: dict = {}
    start = threading.Barrier(len(alone))

    def call(key) -> None:
        i, n, full = key
        start.wait()
        together[key] = index.query(assistant.id, vectors[i], n, with_vectors=full)

    threads = [threading.Thread(target=call, args=(key,)) for key in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, hits in alone.items():
        got = together[key]
        assert [h.example_id for h in got] == [h.example_id for h in hits], key
        assert [h.score for h in got] == pytest.approx([h.score for h in hits], abs=1e-6)
        assert all((h.vector is not None) == key[2] for h in got)
