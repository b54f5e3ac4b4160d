"""Knowledge files in the core: add (all or nothing), list, search, remove; duplicates, limits,
permissions; SQLite is the truth, the knowledge index is repaired and rebuilt from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from knowledge_files import pdf

from assistants import (
    TERMINAL,
    Actor,
    AlreadyExists,
    Core,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)
from storage.index import KNOWLEDGE, IndexUnavailable, collection_name
from storage.settings import SettingsError, load_settings

GUIDE = b"""# Opening hours
The shop opens at nine in the morning and closes at five in the afternoon.

# Refunds
Refunds are given within thirty days when the receipt is shown.
"""
PRICES = b"item,price\ngreen tea,3 euros\nblack coffee,2 euros\n"
MANUAL = pdf(["The espresso machine needs descaling every month.", "Warranty: two years."])


@pytest.fixture
def helper(core):
    return core.assistants.create(TERMINAL, "helper", "Answer from the files.")


def stored(core: Core, assistant_id: int) -> tuple[int, int, int]:
    """(file rows, chunk rows, vectors in the knowledge index) of one assistant."""
    files, chunks = core.db.execute(
        "SELECT (SELECT count(*) FROM knowledge_files WHERE assistant_id = ?), "
        "(SELECT count(*) FROM knowledge_chunks WHERE assistant_id = ?)",
        [assistant_id, assistant_id],
    ).fetchone()
    return files, chunks, core.knowledge_index().count(assistant_id)


def open_with(home, embedder, knowledge: str) -> Core:
    (home / "fewtune.toml").write_text(f"[knowledge]\n{knowledge}\n")
    return Core.open(home, embedder=embedder)


# -- add, list, search, remove -------------------------------------------------------------------


def test_add_list_search_remove(core, helper):
    added = core.knowledge.add(
        TERMINAL, "helper", [("guide.md", GUIDE), ("prices.csv", PRICES), ("manual.pdf", MANUAL)]
    )
    assert [(f.name, f.kind, f.size) for f in added] == [
        ("guide.md", "md", len(GUIDE)),
        ("prices.csv", "csv", len(PRICES)),
        ("manual.pdf", "pdf", len(MANUAL)),
    ]
    assert [f.chunks for f in added] == [2, 1, 2]
    assert all(f.added_by == TERMINAL.user_id and len(f.sha256) == 64 for f in added)
    assert core.knowledge.list(TERMINAL, "helper") == added
    assert stored(core, helper.id) == (3, 5, 5)

    found = core.knowledge.search(TERMINAL, "helper", "when can I get my money back?", k=2)
    assert len(found) == 2
    best = found[0]
    assert (best.file.name, best.chunk.location) == ("guide.md", "Refunds")
    assert "thirty days" in best.chunk.text
    assert found[0].score >= found[1].score
    found = core.knowledge.search(TERMINAL, "helper", "how long is the warranty?", k=1)
    assert (found[0].file.name, found[0].chunk.location) == ("manual.pdf", "page 2")
    found = core.knowledge.search(TERMINAL, "helper", "what does green tea cost?", k=1)
    assert found[0].chunk.text == "item, price\ngreen tea, 3 euros\nblack coffee, 2 euros"

    gone = core.knowledge.remove(TERMINAL, "helper", added[0].id)
    assert gone == added[0]
    assert stored(core, helper.id) == (2, 3, 3)
    found = core.knowledge.search(TERMINAL, "helper", "when can I get my money back?", k=5)
    assert "guide.md" not in {f.file.name for f in found}
    with pytest.raises(NotFound, match=r"'helper' has no knowledge file #\d+"):
        core.knowledge.remove(TERMINAL, "helper", added[0].id)


def test_an_assistant_without_knowledge_searches_nothing_and_has_no_collection(core, helper):
    assert core.knowledge.list(TERMINAL, "helper") == []
    assert core.knowledge.search(TERMINAL, "helper", "anything") == []
    core.repair()
    names = {c.name for c in core.knowledge_index().client.list_collections()}
    assert collection_name(helper.id, KNOWLEDGE) not in names


def test_bad_search_requests(core, helper):
    with pytest.raises(InvalidInput, match="The search query is empty"):
        core.knowledge.search(TERMINAL, "helper", "   ")
    with pytest.raises(InvalidInput, match="-k must be from 1 to 100"):
        core.knowledge.search(TERMINAL, "helper", "tea", k=0)
    with pytest.raises(NotFound, match="No assistant called 'nobody'"):
        core.knowledge.search(TERMINAL, "nobody", "tea")


# -- all or nothing, duplicates ------------------------------------------------------------------


def test_one_bad_file_among_several_adds_none(core, helper):
    files = [("guide.md", GUIDE), ("scan.pdf", pdf([None])), ("prices.csv", PRICES)]
    with pytest.raises(InvalidInput, match=r"^scan\.pdf has no text layer"):
        core.knowledge.add(TERMINAL, "helper", files)
    assert stored(core, helper.id) == (0, 0, 0)
    with pytest.raises(InvalidInput, match=r"^notes\.docx: fewtune reads"):
        core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE), ("notes.docx", b"PK")])
    assert stored(core, helper.id) == (0, 0, 0)
    # Fixed, the same call goes through whole.
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE), ("prices.csv", PRICES)])
    assert stored(core, helper.id)[:2] == (2, 3)


def test_the_same_content_twice_is_refused(core, helper):
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    with pytest.raises(AlreadyExists, match=r"^copy\.md has the same content as guide\.md"):
        core.knowledge.add(TERMINAL, "helper", [("prices.csv", PRICES), ("copy.md", GUIDE)])
    with pytest.raises(AlreadyExists, match=r"^guide\.md is already in 'helper'"):
        core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    with pytest.raises(AlreadyExists, match="already has a file called guide.md"):
        core.knowledge.add(TERMINAL, "helper", [("GUIDE.md", b"# Other\nNew text.")])
    with pytest.raises(AlreadyExists, match=r"^b\.csv is given twice \(as a\.csv too\)"):
        core.knowledge.add(TERMINAL, "helper", [("a.csv", PRICES), ("b.csv", PRICES)])
    with pytest.raises(AlreadyExists, match=r"^A\.txt is given twice \(as a\.txt too\)"):
        core.knowledge.add(TERMINAL, "helper", [("a.txt", b"one"), ("A.txt", b"two")])
    assert [f.name for f in core.knowledge.list(TERMINAL, "helper")] == ["guide.md"]
    # Another assistant may hold the same file.
    core.assistants.create(TERMINAL, "other", "Answer.")
    assert core.knowledge.add(TERMINAL, "other", [("guide.md", GUIDE)])


# -- limits --------------------------------------------------------------------------------------


def test_files_per_assistant(fewtune_home, embedder):
    core = open_with(fewtune_home, embedder, "max_files = 2")
    try:
        core.assistants.create(TERMINAL, "helper", "Answer.")
        core.knowledge.add(TERMINAL, "helper", [("a.txt", b"one")])
        with pytest.raises(LimitExceeded, match="would have 3 knowledge files; the limit is 2"):
            core.knowledge.add(TERMINAL, "helper", [("b.txt", b"two"), ("c.txt", b"three")])
        core.knowledge.add(TERMINAL, "helper", [("b.txt", b"two")])
        assert len(core.knowledge.list(TERMINAL, "helper")) == 2
    finally:
        core.close()


def test_size_per_file(fewtune_home, embedder):
    core = open_with(fewtune_home, embedder, "max_file_mb = 1")
    try:
        core.assistants.create(TERMINAL, "helper", "Answer.")
        big = b"word " * 200_001  # 1,000,005 bytes
        with pytest.raises(LimitExceeded, match=r"^big\.txt is 1\.0 MB; the limit is 1 MB a file"):
            core.knowledge.add(TERMINAL, "helper", [("small.txt", b"hi"), ("big.txt", big)])
        assert core.knowledge.list(TERMINAL, "helper") == []
    finally:
        core.close()


def test_chunks_per_assistant(fewtune_home, embedder):
    core = open_with(fewtune_home, embedder, "max_chunks = 3")
    try:
        core.assistants.create(TERMINAL, "helper", "Answer.")
        core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])  # 2 chunks
        with pytest.raises(LimitExceeded, match="would have 4 knowledge chunks; the limit is 3"):
            core.knowledge.add(TERMINAL, "helper", [("manual.pdf", MANUAL)])
        core.knowledge.add(TERMINAL, "helper", [("prices.csv", PRICES)])  # 1 chunk: fits
    finally:
        core.close()


def test_an_empty_file_and_a_bad_name(core, helper):
    with pytest.raises(InvalidInput, match=r"^empty\.txt is empty"):
        core.knowledge.add(TERMINAL, "helper", [("empty.txt", b"")])
    with pytest.raises(InvalidInput, match="A file's name must be 1 to 200 characters"):
        core.knowledge.add(TERMINAL, "helper", [("x" * 201 + ".txt", b"text")])
    with pytest.raises(InvalidInput, match="Name at least one file"):
        core.knowledge.add(TERMINAL, "helper", [])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_files = 0", "knowledge.max_files must be a whole number of at least 1"),
        ("max_file_mb = 2.5", "knowledge.max_file_mb must be a whole number of at least 1"),
        ("knowledge_k = true", "knowledge.knowledge_k must be a whole number of at least 1"),
        ("min_score = 2", "knowledge.min_score must be a number from -1 to 1"),
        ("chunk_size = 3", "unknown setting 'chunk_size' in [knowledge]"),
    ],
)
def test_bad_knowledge_settings_are_one_sentence(fewtune_home, line, message):
    (fewtune_home / "fewtune.toml").write_text(f"[knowledge]\n{line}\n")
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(fewtune_home)


def test_knowledge_settings_defaults(fewtune_home):
    settings = load_settings(fewtune_home).knowledge
    assert (settings.max_files, settings.max_file_mb, settings.max_chunks) == (20, 10, 2000)
    assert (settings.knowledge_k, settings.min_score) == (4, 0.3)


# -- permissions ---------------------------------------------------------------------------------


def test_only_managers_add_see_search_and_remove_a_guild_assistants_files(core):
    core.assistants.create(Actor("u1", "g1"), "team", "Answer.", visibility="guild")
    member = Actor("u2", "g1")
    with pytest.raises(PermissionDenied, match="may add knowledge to it"):
        core.knowledge.add(member, "team", [("guide.md", GUIDE)])
    moderator = Actor("u3", "g1", can_manage_guild=True)
    (added,) = core.knowledge.add(moderator, "team", [("guide.md", GUIDE)])
    with pytest.raises(PermissionDenied, match="may see the knowledge files of it"):
        core.knowledge.list(member, "team")
    with pytest.raises(PermissionDenied, match="may search the knowledge of it"):
        core.knowledge.search(member, "team", "refunds")
    with pytest.raises(PermissionDenied, match="may remove knowledge from it"):
        core.knowledge.remove(member, "team", added.id)
    outsider = Actor("u4", "g2", can_manage_guild=True)
    with pytest.raises(NotFound):
        core.knowledge.list(outsider, "team")
    with pytest.raises(NotFound):
        core.knowledge.search(outsider, "team", "refunds")
    assert [f.name for f in core.knowledge.list(Actor("u1", "g1"), "team")] == ["guide.md"]


def test_a_file_id_of_another_assistant_is_not_found(core, helper):
    core.assistants.create(TERMINAL, "other", "Answer.")
    (theirs,) = core.knowledge.add(TERMINAL, "other", [("guide.md", GUIDE)])
    with pytest.raises(NotFound, match=f"'helper' has no knowledge file #{theirs.id}"):
        core.knowledge.remove(TERMINAL, "helper", theirs.id)
    assert len(core.knowledge.list(TERMINAL, "other")) == 1


# -- SQLite is the truth -------------------------------------------------------------------------


@pytest.fixture
def reopen(fewtune_home, embedder):
    opened: list[Core] = []

    def open_core() -> Core:
        core = Core.open(fewtune_home, embedder=embedder)
        opened.append(core)
        return core

    yield open_core
    for core in opened:
        core.close()


def test_start_up_repair_rebuilds_lost_and_stray_vectors(core, helper, reopen):
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE), ("manual.pdf", MANUAL)])
    ids = [r[0] for r in core.db.execute("SELECT id FROM knowledge_chunks ORDER BY id")]
    index = core.knowledge_index()
    index.delete(helper.id, ids[:2])  # vectors lost
    index.add(helper.id, [9001], vectors=np.stack([core.embedder.embed_one("ghost")]))
    core.close()

    fresh = reopen()
    assert stored(fresh, helper.id) == (2, 4, 4)  # opening the index repaired it
    assert fresh.knowledge_index().ids(helper.id) == set(ids)
    found = fresh.knowledge.search(TERMINAL, "helper", "when does the shop open?", k=1)
    assert found[0].chunk.location == "Opening hours"
    assert fresh.repair().checked == 0


def test_a_write_interrupted_before_the_index_is_repaired(core, helper, reopen):
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    index = core.knowledge_index()
    index.drop(helper.id)  # as if the process died after SQLite's commit, before the index
    with core.db.conn:
        core.db.execute("UPDATE assistants SET knowledge_dirty = 1 WHERE id = ?", [helper.id])
    core.close()

    fresh = reopen()
    report = fresh.repair(fresh.knowledge_index())  # already repaired on opening
    assert report.checked == 0
    assert stored(fresh, helper.id) == (1, 2, 2)
    dirty = fresh.db.execute("SELECT knowledge_dirty FROM assistants").fetchone()[0]
    assert dirty == 0


def test_reindex_rebuilds_knowledge_from_sqlite(core, helper):
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    ids = [r[0] for r in core.db.execute("SELECT id FROM knowledge_chunks ORDER BY id")]
    wrong = np.stack([core.embedder.embed_one("completely unrelated")] * len(ids))
    core.knowledge_index().add(helper.id, ids, vectors=wrong)  # counts agree: repair can't see
    assert core.repair().checked == 0
    assert core.knowledge.search(TERMINAL, "helper", "refunds receipt")[0].score < 0.5

    assert core.reindex_knowledge() == 2
    best = core.knowledge.search(TERMINAL, "helper", "refunds receipt", k=1)[0]
    assert (best.chunk.location, best.score > 0.5) == ("Refunds", True)
    assert core.reindex() == 0  # the examples' index is its own


def test_deleting_an_assistant_drops_its_knowledge(core, helper, reopen):
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    name = collection_name(helper.id, KNOWLEDGE)
    assert name in {c.name for c in core.knowledge_index().client.list_collections()}
    core.assistants.delete(TERMINAL, "helper")
    assert name not in {c.name for c in core.knowledge_index().client.list_collections()}
    assert core.db.execute("SELECT count(*) FROM knowledge_chunks").fetchone()[0] == 0

    # A collection left behind by a process that died before dropping it goes at start-up.
    core.assistants.create(TERMINAL, "gone", "Answer.")
    gone = core.assistants.get(TERMINAL, "gone").id
    core.knowledge.add(TERMINAL, "gone", [("guide.md", GUIDE)])
    with core.db.conn:
        core.db.execute("DELETE FROM assistants WHERE id = ?", [gone])
    core.close()
    fresh = reopen()
    names = {c.name for c in fresh.knowledge_index().client.list_collections()}
    assert collection_name(gone, KNOWLEDGE) not in names


def test_a_failing_index_write_leaves_no_file(fewtune_home, embedder, chroma_server, monkeypatch):
    url, server = chroma_server
    monkeypatch.setenv("FEWTUNE_CHROMA_URL", url)
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        assistant = core.assistants.create(TERMINAL, "helper", "Answer.")
        core.knowledge_index()  # opened while the server answers
        server.terminate()
        server.wait(timeout=10)
        with pytest.raises(IndexUnavailable, match="unavailable"):
            core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
        files, dirty = core.db.execute(
            "SELECT (SELECT count(*) FROM knowledge_files), knowledge_dirty FROM assistants "
            "WHERE id = ?",
            [assistant.id],
        ).fetchone()
        assert (files, dirty) == (0, 0)
        assert core.db.execute("SELECT count(*) FROM knowledge_chunks").fetchone()[0] == 0
    finally:
        core.close()


def test_json_and_html_files_search_by_their_items(core, helper):
    faq = json.dumps([{"q": "parking", "a": "Free parking behind the shop."}]).encode()
    page = b"<h1>Delivery</h1><p>We deliver on Tuesdays and Fridays.</p>"
    core.knowledge.add(TERMINAL, "helper", [("faq.json", faq), ("shop.html", page)])
    best = core.knowledge.search(TERMINAL, "helper", "where can I park my car?", k=1)[0]
    assert (best.file.name, best.chunk.location) == ("faq.json", "item 1")
    best = core.knowledge.search(TERMINAL, "helper", "which days do you deliver?", k=1)[0]
    assert (best.file.name, best.chunk.location) == ("shop.html", "Delivery")
