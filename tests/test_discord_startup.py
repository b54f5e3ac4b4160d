"""The Discord bot and the local model server at start-up (issue 12): the bot finds or starts
the server in the background when it starts (its login never waits for it), a chat that
arrives while it is starting says so in its placeholder and then answers, nothing starts when
no local model is used, and a server that cannot start leaves the bot running and the chat
answered in one sentence. Real components: the loopback Discord, the real `fewtune serve` on
the tiny random Llama (model `tiny`), the real openai client in the model calls' process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from discord_fake.harness import running_bot, write_provider_settings
from discord_fake.records import Channel, Interaction, User
from discord_fake.server import FakeDiscord
from server_fixtures import make_tiny_model

from assistants import Actor, Core
from assistants.local_server import local_server_running, stop_local_server

NOTE = "⏳ Starting the local model server"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama: a real `fewtune serve` that starts in seconds."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@dataclass
class Started:
    fake: FakeDiscord
    bot: Any
    core: Core
    user: User
    channel: Channel


def write_settings(home: Path, model: Any, server_model: str, **server: Any) -> None:
    """The Discord tests' providers (the fake model as `fewtune`, the default model), and a
    [server] table for the local `fewtune serve`. Tests that use this take `serve_url`, which
    sets provider `fewtune`'s key."""
    write_provider_settings(home, model.base_url, model)
    lines = ["[server]", f'model = "{server_model}"', "idle_timeout = 0", "start_timeout = 120"]
    lines += [f"{key} = {str(value).lower()}" for key, value in server.items()]
    with open(home / "fewtune.toml", "a", encoding="utf-8") as toml:
        toml.write("\n".join(lines) + "\n")


@asynccontextmanager
async def started_bot(home: Path, embedder: Any, *, model: str | None) -> AsyncIterator[Started]:
    """The real bot on a loopback Discord, with assistant `helper` answering from `model`
    (None: the default model, the fake one) created before the bot starts. The local server
    is stopped at the end, whatever happened."""
    core = Core.open(home, embedder=embedder)
    try:
        async with FakeDiscord() as fake:
            owner = fake.add_user("olivia")
            guild = fake.add_guild("Guild One", owner)
            core.assistants.create(
                Actor(str(owner.id), str(guild.id)),
                "helper",
                "Answer briefly.",
                model=model,
                temperature=0.0,
                max_tokens=4,
            )
            async with running_bot(fake, core, stream_interval=0.2) as bot:
                yield Started(fake, bot, core, owner, fake.channel(guild))
            await asyncio.get_running_loop().shutdown_default_executor()
        await core.providers.close()
    finally:
        stop_local_server(core.settings)
        core.close()


async def chat(started: Started, text: str) -> Interaction:
    """`/chat helper text`, waited for until its answer is complete (buttons, or a failure)
    and its thread is open."""
    ix = await started.fake.slash(
        "chat",
        user=started.user,
        channel=started.channel,
        options={"assistant": "helper", "message": text},
    )
    await started.fake.wait_until(
        lambda: any(m.buttons() for m in ix.messages()) or "⚠️" in ix.text(),
        120,
        "a complete answer",
    )
    if "⚠️" not in ix.text():
        await started.fake.wait_until(lambda: ix.original and ix.original.thread, 15, "a thread")
    return ix


def placeholder(ix: Interaction) -> str:
    """What the answer's message first showed (the first follow-up fills Discord's
    "thinking…" response)."""
    assert ix.original is not None and ix.original.edits
    return ix.original.edits[0].content


def server_starts(home: Path) -> int:
    log = home / "logs" / "server.log"
    return log.read_text(encoding="utf-8").count("--- starting") if log.exists() else 0


async def test_the_bot_starts_the_local_server_without_any_chat(
    fewtune_home, embedder, model, tiny
):
    write_settings(fewtune_home, model, str(tiny))
    async with started_bot(fewtune_home, embedder, model="local:tiny") as started:
        providers = started.core.providers
        # The bot is logged in and connected while the server is still starting: login did
        # not wait for it.
        assert providers.local_starting
        await started.fake.wait_until(lambda: not providers.local_starting, 120, "the server")
        assert await asyncio.to_thread(local_server_running, started.core.settings)
        assert server_starts(fewtune_home) == 1
        assert started.core.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


async def test_a_chat_while_the_server_starts_says_so_then_answers(
    fewtune_home, embedder, model, tiny
):
    write_settings(fewtune_home, model, str(tiny))
    async with started_bot(fewtune_home, embedder, model="local:tiny") as started:
        assert started.core.providers.local_starting
        ix = await chat(started, "hello")
        assert placeholder(ix).startswith(NOTE), placeholder(ix)
        assert "\n" not in placeholder(ix)  # one line
        shown = ix.text()
        assert "⏳" not in shown and "⚠️" not in shown and shown.strip(), shown
        assert ix.original is not None and ix.original.buttons()
        rows = list(started.core.db.query("SELECT * FROM messages WHERE role = 'assistant'"))
        assert [(r["model"], r["status"]) for r in rows] == [("local:tiny", "ok")]
        assert server_starts(fewtune_home) == 1  # the chat waited for the bot's start
        # The next chat finds the server running: no note.
        again = await chat(started, "again")
        assert not placeholder(again).startswith("⏳"), placeholder(again)


async def test_no_local_model_starts_nothing(fewtune_home, embedder, model, serve_url):
    # A wrongly started server would leave its log (and fail: there is no such model).
    write_settings(fewtune_home, model, "/nonexistent/model")
    async with started_bot(fewtune_home, embedder, model=None) as started:
        assert not started.core.providers.local_starting
        ix = await chat(started, "hi there")
        assert ix.text().startswith("echo: hi there"), ix.text()
        assert not placeholder(ix).startswith("⏳")
        assert not (fewtune_home / "logs" / "server.log").exists()


async def test_start_with_bot_off_starts_on_the_first_chat_and_says_so(
    fewtune_home, embedder, model, tiny
):
    write_settings(fewtune_home, model, str(tiny), start_with_bot=False)
    async with started_bot(fewtune_home, embedder, model="local:tiny") as started:
        await asyncio.sleep(0.5)
        assert not started.core.providers.local_starting
        assert server_starts(fewtune_home) == 0
        ix = await chat(started, "hello")
        assert placeholder(ix).startswith(NOTE), placeholder(ix)
        assert "⚠️" not in ix.text() and ix.original is not None and ix.original.buttons()
        assert server_starts(fewtune_home) == 1


async def test_a_server_that_cannot_start_leaves_the_bot_answering_in_one_sentence(
    fewtune_home, embedder, model, caplog
):
    write_settings(fewtune_home, model, "/nonexistent/model")
    caplog.set_level(logging.WARNING, logger="assistants.providers")
    async with started_bot(fewtune_home, embedder, model="local:nonexistent") as started:
        providers = started.core.providers
        await started.fake.wait_until(lambda: not providers.local_starting, 60, "the failure")
        warned = [r.getMessage() for r in caplog.records if "did not start" in r.getMessage()]
        assert len(warned) == 1 and "does not exist" in warned[0], warned
        ix = await chat(started, "hello")
        said = ix.text()
        assert said.startswith("⚠️ The local model server exited with code 1 while starting"), said
        assert "/nonexistent/model does not exist" in said
        assert "\n" not in said and "Traceback" not in said, said
        assert not started.bot.is_closed()
        # The bot goes on serving: another command is answered.
        listed = await started.fake.slash(
            "assistant", "list", user=started.user, channel=started.channel
        )
        await started.fake.answered(listed)
        assert "helper" in listed.text()
