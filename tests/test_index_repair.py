"""SQLite is the truth: the index is repaired from it after a crash, rebuilt by reindex, and a
failed index write leaves no example behind."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import assistants.core as core_module
from assistants import TERMINAL, Core
from assistants.assistant import now
from storage.index import ExampleIndex, IndexUnavailable, collection_name


@pytest.fixture
def reopen(fewtune_home, embedder):
    """Open fresh cores on the same FEWTUNE_HOME, as a restarted process would."""
    opened: list[Core] = []

    def open_core() -> Core:
        core = Core.open(fewtune_home, embedder=embedder)
        opened.append(core)
        return core

    yield open_core
    for core in opened:
        core.close()


def fill(core: Core, name: str, texts: list[str]) -> list[int]:
    core.assistants.create(TERMINAL, name, "Answer.")
    return [core.examples.add(TERMINAL, name, t, t.upper()).id for t in texts]


def crash_after_sqlite_write(core: Core, assistant_id: int, text: str) -> int:
    """What a process dying between the SQLite write and the index write leaves: a row, and the
    assistant marked dirty, with no vector."""
    with core.db.conn:
        core.db.execute("UPDATE assistants SET index_dirty = 1 WHERE id = ?", [assistant_id])
        return int(
            core.db.table("examples")
            .insert(
                {
                    "assistant_id": assistant_id,
                    "input": text,
                    "output": "answer",
                    "source": "manual",
                    "author_id": "local",
                    "content_hash": f"hash-of-{text}",
                    "created_at": now(),
                }
            )
            .last_pk
        )


def search_ids(core: Core, name: str, query: str, k: int = 10) -> list[int]:
    return [e.id for e, _ in core.examples.search(TERMINAL, name, query, k)]


def test_first_index_use_repairs_a_crash_between_the_two_writes(core, reopen, caplog):
    ids = fill(core, "helper", ["the cat sleeps", "stock markets fell"])
    assistant = core.assistants.get(TERMINAL, "helper")
    lost = crash_after_sqlite_write(core, assistant.id, "a recipe for sourdough bread")
    assert core.index().count(assistant.id) == 2
    core.close()

    fresh = reopen()
    with caplog.at_level(logging.WARNING, logger="assistants.core"):
        found = search_ids(fresh, "helper", "how do I bake bread?")
    assert found[0] == lost
    assert sorted(found) == sorted([*ids, lost])
    assert "1 assistants, 1 added, 0 removed" in caplog.text
    assert fresh.db.execute("SELECT index_dirty FROM assistants").fetchone()[0] == 0
    assert fresh.repair().checked == 0  # nothing left to do


def test_repair_report_counts_missing_and_stray_vectors(core, reopen):
    first = fill(core, "first", ["one", "two", "three"])
    fill(core, "second", ["four"])
    a = core.assistants.get(TERMINAL, "first").id
    b = core.assistants.get(TERMINAL, "second").id
    index = core.index()
    index.delete(a, first[:2])  # vectors lost
    stray = np.stack([core.embedder.embed_one("ghost")] * 2)
    index.add(b, [9001, 9002], vectors=stray)  # vectors of examples SQLite does not have
    core.close()

    fresh = reopen()
    report = fresh.repair(ExampleIndex(fresh.settings, fresh.embedder))
    assert (report.checked, report.added, report.removed) == (2, 2, 2)
    index = fresh.index()
    assert index.ids(a) == set(first)
    assert index.count(b) == 1
    assert fresh.repair().checked == 0


def test_collections_of_deleted_assistants_are_dropped(core, reopen):
    fill(core, "gone", ["one", "two"])
    fill(core, "kept", ["three"])
    gone = core.assistants.get(TERMINAL, "gone").id
    core.index()  # open it, then delete the row as if the process died before dropping
    with core.db.conn:
        core.db.execute("DELETE FROM assistants WHERE id = ?", [gone])
    assert collection_name(gone) in {c.name for c in core.index().client.list_collections()}
    core.close()

    fresh = reopen()
    names = {c.name for c in fresh.index().client.list_collections()}
    assert collection_name(gone) not in names
    assert collection_name(fresh.assistants.get(TERMINAL, "kept").id) in names


def test_reindex_rebuilds_everything_from_sqlite(core):
    fill(core, "helper", ["the cat sleeps", "stock markets fell", "bake sourdough bread"])
    fill(core, "other", ["capital of France"])
    assistant = core.assistants.get(TERMINAL, "helper")
    ids = [e.id for e in core.examples.list(TERMINAL, "helper")]
    # Wrong vectors under the right ids: counts agree, so only a rebuild can notice.
    wrong = np.stack([core.embedder.embed_one("completely unrelated")] * 3)
    core.index().add(assistant.id, ids, vectors=wrong)
    scores = [s for _, s in core.examples.search(TERMINAL, "helper", "the cat sleeps")]
    assert max(scores) < 0.9
    assert core.repair().checked == 0

    assert core.reindex() == 4
    found = core.examples.search(TERMINAL, "helper", "the cat sleeps")
    assert found[0][0].input == "the cat sleeps"
    assert found[0][1] == pytest.approx(1.0, abs=1e-3)
    assert core.index().count(assistant.id) == 3
    assert core.index().count(core.assistants.get(TERMINAL, "other").id) == 1


class BrokenIndex(ExampleIndex):
    """An index whose writes fail, as a full disk or a dropped connection would."""

    def add(self, *args, **kwargs):
        raise RuntimeError("index write failed")


def test_a_failing_index_write_leaves_no_example_and_raises(fewtune_home, embedder, monkeypatch):
    monkeypatch.setattr(core_module, "ExampleIndex", BrokenIndex)
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        assistant = core.assistants.create(TERMINAL, "helper", "Answer.")
        with pytest.raises(RuntimeError, match="index write failed"):
            core.examples.add(TERMINAL, "helper", "hello", "hi")
        data = b'{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n'
        with pytest.raises(RuntimeError, match="index write failed"):
            core.examples.import_data(TERMINAL, "helper", "x.jsonl", data)
        assert core.db.execute("SELECT count(*) FROM examples").fetchone()[0] == 0
        dirty = core.db.execute(
            "SELECT index_dirty FROM assistants WHERE id = ?", [assistant.id]
        ).fetchone()[0]
        assert dirty == 0
    finally:
        core.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_chroma_server_refuses_writes_cleanly(fewtune_home, embedder, monkeypatch):
    monkeypatch.setenv("FEWTUNE_CHROMA_URL", f"http://127.0.0.1:{closed_port()}")
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        core.assistants.create(TERMINAL, "helper", "Answer.")
        with pytest.raises(IndexUnavailable, match="unavailable"):
            core.examples.add(TERMINAL, "helper", "hello", "hi")
        with pytest.raises(IndexUnavailable):
            core.examples.import_data(TERMINAL, "helper", "x.jsonl", b'{"input":"a","output":"b"}')
        assert core.examples.count(TERMINAL, "helper") == 0
        # Deleting still works: SQLite is the truth, and repair drops the collection later.
        core.assistants.delete(TERMINAL, "helper")
        assert core.assistants.list(TERMINAL) == []
    finally:
        core.close()


OPEN_NEW_INDEX = """
import sys, time
from storage.embeddings import Embedder
from storage.index import ExampleIndex
from storage.settings import load_settings
index = ExampleIndex(load_settings(sys.argv[1]), Embedder())
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at the same moment
print(index.count(1))
"""


def test_processes_opening_a_new_index_at_once_all_open_it(tmp_path):
    """chromadb creates its tables when a folder is first opened; two processes doing it at once
    failed one of them ("table collections already exists"). Opening is one at a time."""
    home = tmp_path / "home"
    at = str(time.time() + 8)  # after every process has imported chromadb
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_NEW_INDEX, str(home), at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.strip() == "0"
