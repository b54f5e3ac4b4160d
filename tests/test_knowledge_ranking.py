"""Hybrid retrieval of knowledge (assistants/knowledge/ranking.py): the words index (FTS5) finds
what the embedding blurs, stays in step with the chunks through every write and delete, keeps
each assistant to its own chunks, takes any message as words (never as query syntax), and is
built for chunks stored before it existed."""

from __future__ import annotations

import pytest

from assistants import TERMINAL, Core
from assistants.knowledge.ranking import rank, word_matches, words_query

# Forty near-alike paragraphs (one chunk each: a heading apiece) and one that alone names a
# part code. The code is a rare string an embedding reads as noise; its words find it.
PARTS = "\n\n".join(
    f"# Part {n}\nThe kettle's spare part number {n} fits the lid and is sold in the shop."
    for n in range(40)
)
CODE = "# Seal\nThe seal for the base is part XQ7731, sold in the shop with the kettle."
DOC = f"{PARTS}\n\n{CODE}\n".encode()


def words_rows(core: Core, assistant_id: int) -> int:
    """How many chunks of the assistant the words index holds."""
    row = core.db.execute(
        "SELECT count(*) FROM knowledge_words WHERE knowledge_words MATCH ?",
        [f"owner:a{assistant_id}"],
    ).fetchone()
    return int(row[0])


@pytest.fixture
def kettle(core):
    assistant = core.assistants.create(TERMINAL, "kettle", "Answer from the manual.")
    core.knowledge.add(TERMINAL, "kettle", [("manual.md", DOC)])
    return assistant


def test_a_rare_word_is_found_by_its_words(core, kettle):
    ids = word_matches(core.db, kettle.id, "which part is XQ7731?", 5)
    first = core.db.execute("SELECT text FROM knowledge_chunks WHERE id = ?", [ids[0]]).fetchone()
    assert "XQ7731" in first[0]
    found = core.knowledge.search(TERMINAL, "kettle", "which part is XQ7731?", k=1)
    assert "XQ7731" in found[0].chunk.text
    assert -1.0 <= found[0].score <= 1.0  # still the cosine similarity, for min_score


def test_fused_results_keep_their_cosine_scores(core, kettle):
    index = core.knowledge_index()
    text = "which part is XQ7731?"
    vector = index.embedder.embed_one(text)
    ranked = rank(core.db, index, kettle.id, text, vector, 4)
    assert len(ranked) == 4 and len({r.chunk_id for r in ranked}) == 4
    stored = index.vectors(kettle.id, [r.chunk_id for r in ranked])
    for r in ranked:
        assert r.score == pytest.approx(float(stored[r.chunk_id] @ vector), abs=1e-4)


def test_the_words_index_follows_adds_removes_and_deletes(core, kettle):
    chunks = core.db.execute(
        "SELECT count(*) FROM knowledge_chunks WHERE assistant_id = ?", [kettle.id]
    ).fetchone()[0]
    assert words_rows(core, kettle.id) == chunks == 41
    added = core.knowledge.add(TERMINAL, "kettle", [("extra.txt", b"Descale it every month.")])
    assert words_rows(core, kettle.id) == 42
    core.knowledge.remove(TERMINAL, "kettle", added[0].id)
    assert words_rows(core, kettle.id) == 41
    assert word_matches(core.db, kettle.id, "descale", 5) == []
    core.assistants.delete(TERMINAL, "kettle")  # cascades to its chunks, and so to their words
    assert words_rows(core, kettle.id) == 0


def test_an_assistant_never_finds_another_ones_words(core, kettle):
    other = core.assistants.create(TERMINAL, "other", "x")
    core.knowledge.add(TERMINAL, "other", [("notes.txt", b"Nothing about seals here at all.")])
    assert word_matches(core.db, other.id, "XQ7731", 5) == []
    assert all(
        "XQ7731" not in f.chunk.text for f in core.knowledge.search(TERMINAL, "other", "XQ7731")
    )


@pytest.mark.parametrize(
    "text",
    ['"', "AND OR NOT", "NEAR(a b)", "owner:a1", "*", "^start", "a - b", "🫖 ☕", "x" * 5000],
)
def test_any_message_is_words_never_query_syntax(core, kettle, text):
    word_matches(core.db, kettle.id, text, 5)  # no FTS5 syntax error, whatever was typed
    core.knowledge.search(TERMINAL, "kettle", text)


def test_a_message_without_words_ranks_by_meaning_alone():
    assert words_query("?! … 🫖") is None
    assert words_query("Part part PART x") == '"part" OR "x"'


def test_chunks_stored_before_the_words_index_are_put_in_it(core, kettle, fewtune_home, embedder):
    core.db.execute("DROP TABLE knowledge_words")  # as a database made before m011 has it
    for trigger in ("add", "drop", "change"):
        core.db.execute(f"DROP TRIGGER knowledge_words_{trigger}")
    core.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm011_knowledge_words'")
    core.db.conn.commit()
    again = Core.open(fewtune_home, embedder=embedder)
    try:
        assert words_rows(again, kettle.id) == 41
        found = again.knowledge.search(TERMINAL, "kettle", "XQ7731", k=1)
        assert "XQ7731" in found[0].chunk.text
    finally:
        again.close()
