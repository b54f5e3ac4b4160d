"""A promotion interrupted while its fine-tuning job is being created never blocks the assistant:
the frontend stopping (a bot closing, Ctrl-C) ends it, a restarted frontend that finds one ends
it with one sentence, and cancelling one works whether or not its job exists yet (the job then
created is cancelled on the provider). The provider is a small OpenAI-speaking HTTP server on
127.0.0.1 that holds its answer to a chosen request until the test lets it go."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from assistants import TERMINAL, InvalidInput
from assistants.promotion import NOT_CREATED


class HeldProvider:
    """Answers /v1/files and /v1/fine_tuning/jobs like a provider; a request whose path ends
    with `hold` waits until `release` is set. `seen` lists "METHOD path" of every request."""

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.seen: list[str] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path = head.split(b" ")[:2]
        length = 0
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":")[1])
        await reader.readexactly(length)
        route = path.decode().removeprefix("/v1")
        self.seen.append(f"{method.decode()} {route}")
        if route.endswith(self.hold):
            self.held.set()
            await self.release.wait()
        body = self.answer(route)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    @staticmethod
    def answer(route: str) -> bytes:
        if route == "/files":
            data = {"id": "file-1", "object": "file", "bytes": 1, "created_at": 0}
            data |= {"filename": "t.jsonl", "purpose": "fine-tune", "status": "processed"}
        else:
            status = "cancelled" if route.endswith("/cancel") else "queued"
            data = {"id": "ftjob-1", "object": "fine_tuning.job", "status": status}
            data |= {"model": "tiny", "created_at": 0, "training_file": "file-1"}
        return json.dumps(data).encode()


@pytest.fixture
async def provider(fewtune_home, monkeypatch) -> AsyncIterator[HeldProvider]:
    """The held provider, configured as `[providers.held]` in the test's fewtune.toml."""
    held = HeldProvider(hold="/fine_tuning/jobs")
    server = await asyncio.start_server(held.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    held.url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv("HELD_KEY", "k")
    (fewtune_home / "fewtune.toml").write_text(
        f'[providers.held]\nbase_url = "{held.url}"\napi_key_env = "HELD_KEY"\nmax_retries = 0\n'
    )
    yield held
    held.release.set()
    server.close()


@pytest.fixture
def core(provider, fewtune_home, embedder):
    """The core, opened on the settings that name the held provider."""
    from assistants import Core

    opened = Core.open(fewtune_home, embedder=embedder)
    yield opened
    opened.close()


@pytest.fixture
def helper(core) -> str:
    core.assistants.create(TERMINAL, "helper", "Answer.", model="held:tiny")
    lines = "\n".join(json.dumps({"input": f"q {i}", "output": f"a {i}"}) for i in range(20))
    core.examples.import_data(TERMINAL, "helper", "e.jsonl", lines.encode())
    return "helper"


def stored(core, status: str, follower: dict | None = None) -> int:
    """A promotion row as a process that died while creating its job left it."""
    assistant = core.assistants.get(TERMINAL, "helper")
    with core.db.conn:
        return int(
            core.db.table("promotions")
            .insert(
                {
                    "assistant_id": assistant.id,
                    "provider": "held",
                    "base_model": "tiny",
                    "status": status,
                    "follower": json.dumps(follower) if follower else None,
                    "created_at": "2026-01-01",
                    "updated_at": "2026-01-01",
                }
            )
            .last_pk
        )


async def test_a_frontend_stopping_while_the_job_is_created_ends_the_promotion(
    provider, core, helper
):
    where = {"frontend": "discord", "channel_id": "1", "message_id": "2"}
    task = asyncio.create_task(core.promotions.promote(TERMINAL, helper, where, resumable=True))
    await asyncio.wait_for(provider.held.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    promotion = core.promotions.latest(TERMINAL, helper)
    assert promotion.status == "failed" and promotion.error == NOT_CREATED
    # Nothing is left active: a new promotion may start.
    assistant, data = await core.promotions.to_promote(TERMINAL, helper, force=False)
    assert assistant.name == helper and data.train


async def test_a_restarted_frontend_ends_a_promotion_left_without_a_job(core, helper):
    follower = {"frontend": "discord", "actor": TERMINAL.to_dict(), "force": False}
    stored(core, "uploading", follower)
    ((promotion, assistant),) = await core.promotions.to_resume("discord")
    with pytest.raises(InvalidInput, match="job was never created"):
        await core.promotions.resume(promotion)
    ended = core.promotions.latest(TERMINAL, helper)
    assert ended.status == "failed" and ended.follower is None
    assert await core.promotions.to_resume("discord") == []
    await core.promotions.to_promote(TERMINAL, helper, force=False)  # not refused


async def test_cancel_ends_a_promotion_whose_job_was_never_created(core, helper):
    stored(core, "uploading")  # e.g. `fewtune promote` killed during the upload
    with pytest.raises(Exception, match="already running"):
        await core.promotions.to_promote(TERMINAL, helper, force=False)
    cancelled = await core.promotions.cancel(TERMINAL, helper)
    assert cancelled.status == "cancelled" and cancelled.job == "no job created"
    await core.promotions.to_promote(TERMINAL, helper, force=False)  # not refused
    with pytest.raises(InvalidInput, match="no running promotion"):
        await core.promotions.cancel(TERMINAL, helper)


async def test_a_promotion_cancelled_while_its_job_is_created_cancels_that_job(
    provider, core, helper
):
    started = asyncio.create_task(core.promotions.start(TERMINAL, helper))
    await asyncio.wait_for(provider.held.wait(), 30)
    cancelled = await core.promotions.cancel(TERMINAL, helper)
    assert cancelled.status == "cancelled"
    provider.release.set()
    promotion = await asyncio.wait_for(started, 30)
    assert promotion.status == "cancelled" and promotion.job_id == "ftjob-1"
    assert provider.seen[-1] == "POST /fine_tuning/jobs/ftjob-1/cancel"
