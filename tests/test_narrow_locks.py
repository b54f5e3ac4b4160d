"""Narrow locks: a large import embeds and indexes outside the core's write lock, and the
embedder lets a message's embedding go between the import's batches, so chats keep being
answered (and stored) while it runs."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from assistants import TERMINAL, Core

IMPORT_SIZE = 5_000


@pytest.fixture
async def chat_core(fewtune_home, embedder, model):
    """A core whose `scripted` provider is the tests' fake model (tests/fake_model.py)."""
    (fewtune_home / "fewtune.toml").write_text(
        "[providers.scripted]\n"
        f'base_url = "{model.base_url}"\n'
        "max_retries = 0\n"
        "timeout = 30.0\n"
        "[chat]\n"
        'default_model = "scripted:echo"\n',
        encoding="utf-8",
    )
    core = Core.open(fewtune_home, embedder=embedder)
    await core.api.open_index()
    core.assistants.create(TERMINAL, "helper", "Answer briefly.", k=2)
    core.examples.add(TERMINAL, "helper", "hello", "hi there")
    yield core
    await core.providers.close()
    core.close()


def import_file(n: int) -> bytes:
    lines = (
        json.dumps({"input": f"question number {i} about item {i * 7}", "output": f"answer {i}"})
        for i in range(n)
    )
    return ("\n".join(lines) + "\n").encode()


def stored(core: Core, conversation_id: int) -> list[tuple[str, str]]:
    rows = core.db.execute(
        "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id",
        [conversation_id],
    ).fetchall()
    return [(role, content) for role, content in rows]


async def test_a_chat_is_answered_and_stored_while_a_large_import_runs(chat_core):
    core = chat_core
    finished: dict[str, float] = {}

    async def run_import():
        result = await core.api.import_examples(
            TERMINAL, "helper", "big.jsonl", import_file(IMPORT_SIZE)
        )
        finished["import"] = time.monotonic()
        return result

    importing = asyncio.create_task(run_import())
    # Chat once the import's rows are in SQLite: its embedding and indexing are under way.
    while core.db.execute("SELECT count(*) FROM examples").fetchone()[0] < 2:
        assert not importing.done(), "the import ended before the chat could start"
        await asyncio.sleep(0.01)
    reply = await core.chat.ask(TERMINAL, "helper", "hello")
    finished["chat"] = time.monotonic()
    chat_during_import = not importing.done()
    result = await importing

    assert result.added == IMPORT_SIZE
    assert chat_during_import, "the chat waited for the import"
    assert finished["chat"] < finished["import"]
    assert reply.text == "echo: hello"
    assert stored(core, reply.conversation_id) == [("user", "hello"), ("assistant", "echo: hello")]
    assert core.db.execute("SELECT index_dirty FROM assistants").fetchone()[0] == 0
    assert core.index().count(core.assistants.get(TERMINAL, "helper").id) == IMPORT_SIZE + 1


def test_two_imports_of_the_same_file_at_once_insert_it_once(core):
    core.assistants.create(TERMINAL, "helper", "Answer briefly.")
    data = import_file(300)

    async def both():
        return await asyncio.gather(
            core.api.import_examples(TERMINAL, "helper", "a.jsonl", data),
            core.api.import_examples(TERMINAL, "helper", "b.jsonl", data),
        )

    first, second = asyncio.run(both())
    assert sorted([first.added, second.added]) == [0, 300]
    assert sorted([first.duplicates, second.duplicates]) == [0, 300]
    assert core.examples.count(TERMINAL, "helper") == 300
    assert core.index().count(core.assistants.get(TERMINAL, "helper").id) == 300
    assert core.db.execute("SELECT index_dirty FROM assistants").fetchone()[0] == 0
