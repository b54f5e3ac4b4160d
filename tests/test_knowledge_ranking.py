"""Hybrid retrieval of knowledge (assistants/knowledge/ranking.py): the words ranking (BM25 over
the assistant's own chunks) finds what the embedding blurs, follows every write and delete,
keeps each assistant to its own chunks and its own counts, and reads any message as words; the
fused results keep their cosine scores."""

from __future__ import annotations

import math

import pytest

from assistants import TERMINAL, Core
from assistants.knowledge.ranking import Words, rank, words

# Forty near-alike paragraphs (one chunk each: a heading apiece) and one that alone names a
# part code. The code is a rare string an embedding reads as noise; its words find it.
PARTS = "\n\n".join(
    f"# Part {n}\nThe kettle's spare part number {n} fits the lid and is sold in the shop."
    for n in range(40)
)
CODE = "# Seal\nThe seal for the base is part XQ7731, sold in the shop with the kettle."
DOC = f"{PARTS}\n\n{CODE}\n".encode()


@pytest.fixture
def kettle(core):
    assistant = core.assistants.create(TERMINAL, "kettle", "Answer from the manual.")
    core.knowledge.add(TERMINAL, "kettle", [("manual.md", DOC)])
    return assistant


def by_words(core: Core, assistant_id: int, text: str, n: int = 5) -> list[str]:
    """The texts of the assistant's n chunks that best match the text's words."""
    held = core.held_knowledge.of(assistant_id)
    ids = held.words.best(text, n) if held else []
    found = dict(core.db.execute("SELECT id, text FROM knowledge_chunks").fetchall())
    return [found[i] for i in ids]


def test_a_rare_word_is_found_by_its_words(core, kettle):
    assert "XQ7731" in by_words(core, kettle.id, "which part is XQ7731?")[0]
    found = core.knowledge.search(TERMINAL, "kettle", "which part is XQ7731?", k=1)
    assert "XQ7731" in found[0].chunk.text
    assert -1.0 <= found[0].score <= 1.0  # still the cosine similarity, for min_score


def test_fused_results_keep_their_cosine_scores(core, kettle):
    index = core.knowledge_index()
    text = "which part is XQ7731?"
    vector = index.embedder.embed_one(text)
    ranked = rank(core.held_knowledge.of(kettle.id), text, vector, 4)
    assert len(ranked) == 4 and len({r.chunk_id for r in ranked}) == 4
    stored = index.vectors(kettle.id, [r.chunk_id for r in ranked])
    for r in ranked:
        assert r.score == pytest.approx(float(stored[r.chunk_id] @ vector), abs=1e-4)


def test_the_words_follow_adds_removes_and_deletes(core, kettle):
    added = core.knowledge.add(TERMINAL, "kettle", [("extra.txt", b"Descale it every month.")])
    assert by_words(core, kettle.id, "descale") == ["Descale it every month."]
    core.knowledge.remove(TERMINAL, "kettle", added[0].id)
    assert by_words(core, kettle.id, "descale") == []
    core.assistants.delete(TERMINAL, "kettle")
    assert core.held_knowledge.of(kettle.id) is None


def test_an_assistant_never_finds_another_ones_words(core, kettle):
    core.assistants.create(TERMINAL, "other", "x")
    core.knowledge.add(TERMINAL, "other", [("notes.txt", b"Nothing about seals here at all.")])
    other = core.assistants.get(TERMINAL, "other")
    assert by_words(core, other.id, "XQ7731") == []
    assert all(
        "XQ7731" not in f.chunk.text for f in core.knowledge.search(TERMINAL, "other", "XQ7731")
    )


def test_scores_count_the_assistants_own_chunks_only(core, kettle):
    # Another assistant full of "seal" makes the word no commoner for the kettle's manual.
    core.assistants.create(TERMINAL, "seals", "x")
    many = "\n\n".join(f"# Seal {n}\nA seal {n} swims in the sea." for n in range(30))
    core.knowledge.add(TERMINAL, "seals", [("seals.md", many.encode())])
    held = core.held_knowledge.of(kettle.id)
    alone = Words(
        *zip(
            *core.db.execute(
                "SELECT id, text FROM knowledge_chunks WHERE assistant_id = ? ORDER BY id",
                [kettle.id],
            ).fetchall(),
            strict=True,
        )
    )
    assert held.words.best("seal base", 5) == alone.best("seal base", 5)


def test_bm25_by_hand():
    # Three chunks; "tea" in two, "green" in one: the idf and the length norm as documented.
    index = Words([10, 11, 12], ["green tea", "tea tea tea and more words here", "coffee"])
    assert index.best("green tea", 3) == [10, 11]
    assert index.best("coffee", 3) == [12]
    assert index.best("nothing matches", 3) == []
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    assert idf > math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)) > 0  # rarer words weigh more


@pytest.mark.parametrize(
    "text",
    ['"', "AND OR NOT", "NEAR(a b)", "owner:a1", "*", "^start", "a - b", "🫖 ☕", "x" * 5000],
)
def test_any_message_is_read_as_words(core, kettle, text):
    by_words(core, kettle.id, text)
    core.knowledge.search(TERMINAL, "kettle", text)


def test_words_are_case_folded_without_diacritics_and_split_at_underscores():
    assert words("Café STRASSE naïve_user 42") == ["cafe", "strasse", "naive", "user", "42"]
    assert words("Straße") == ["strasse"]
    assert words("?! … 🫖") == []
    assert words("日本語のテキスト") == ["日本語のテキスト"]
