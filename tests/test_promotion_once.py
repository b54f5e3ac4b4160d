"""One promotion per assistant, whichever process or frontend starts it (SQLite keeps to it, not
a process's memory), and cancelling it: the real `fewtune` console script in its own processes,
the real bot on the loopback Discord with a second Core beside it, both on one FEWTUNE_HOME and
the real `fewtune serve` (its fine-tuning API; no job worker runs, so a job stays queued until it
is cancelled). The terminal user and a Discord member never share an assistant (different
scopes), so the rule is shown across processes: CLI against CLI, Discord against another Core."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from discord_fake.harness import SERVE_TOKEN_ENV
from discord_fake.world import World, create_assistant, run
from server_fixtures import make_tiny_model, serving, write_settings

from assistants import TERMINAL, Actor, InvalidInput, NotFound

BASE = "fewtune:tiny-llama"

FEWTUNE = Path(sys.executable).parent / "fewtune"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory):
    """`fewtune serve` with a tiny random Llama (model `tiny-llama`), its job worker not running."""
    token = os.environ.setdefault(SERVE_TOKEN_ENV, secrets.token_urlsafe(16))
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
    settings = write_settings(tmp_path_factory.mktemp("serve-home"), model=str(tiny))
    with serving(settings, token) as (url, _):
        yield url


async def fewtune(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The console script in its own process, on this checkout's code."""
    command = [str(FEWTUNE)] if FEWTUNE.exists() else [sys.executable, "-m", "bot.cli"]
    env = {
        **os.environ,
        "FEWTUNE_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
    }
    return await asyncio.to_thread(
        subprocess.run, [*command, *args], capture_output=True, text=True, env=env, timeout=120
    )


def refused(result: subprocess.CompletedProcess, phrase: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and phrase in lines[0], lines


def one_sentence(ix, phrase: str) -> None:
    text = ix.text()
    assert ix.ephemeral and phrase in text and "\n" not in text.strip(), text


async def helper_with_examples(w: World) -> Actor:
    await create_assistant(w, w.alice, "helper")
    owner = w.bot_actor(w.alice)
    w.core.assistants.edit(owner, "helper", model=BASE)
    lines = "\n".join(json.dumps({"input": f"q {i}", "output": f"a {i}"}) for i in range(20))
    w.core.examples.import_data(owner, "helper", "e.jsonl", lines.encode())
    return owner


@pytest.mark.slow
async def test_the_cli_in_two_processes_keeps_one_promotion_and_cancels_it(
    world: World, fewtune_home
):
    w = world
    w.core.assistants.create(TERMINAL, "helper", "Answer.", model=BASE)
    for i in range(12):
        w.core.examples.add(TERMINAL, "helper", f"q {i}", f"a {i}")
    started = await fewtune(fewtune_home, "promote", "helper")
    assert started.returncode == 0, started.stderr
    assert "is validating_files" in started.stdout  # and stays so: no job worker runs
    refused(await fewtune(fewtune_home, "promote", "helper"), "already running")

    cancelled = await fewtune(fewtune_home, "promote", "cancel", "helper")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip().endswith("is cancelled.")
    status = await fewtune(fewtune_home, "promote", "status", "helper")
    assert status.stdout.splitlines()[0].endswith(": cancelled"), status.stdout
    refused(await fewtune(fewtune_home, "promote", "cancel", "helper"), "no running promotion")
    again = await fewtune(fewtune_home, "promote", "helper")  # the rule holds only while active
    assert again.returncode == 0, again.stderr
    assert len(list(w.core.db.query("SELECT id FROM promotions"))) == 2


@pytest.mark.slow
async def test_a_discord_promotion_refuses_a_second_start_and_its_cancel_button_ends_it(
    world: World, fewtune_home
):
    from assistants import Core, LimitExceeded

    w = world
    owner = await helper_with_examples(w)
    asked = await run(
        w, "assistant", "promote", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    confirm = next(m for m in asked.messages() if m.buttons())
    await w.fake.answered(await w.fake.click(confirm, "Promote", user=w.alice))

    def progress_messages():
        return [m for m in w.fake.bot_messages(w.channel) if not m.ephemeral]

    (progress,) = await w.fake.wait_until(progress_messages, what="the progress message")
    await w.fake.wait_until(
        lambda: "validating_files" in progress.content, what="the job to be created"
    )
    assert [b["label"] for b in progress.buttons()] == ["Cancel"]

    # Asked again in Discord: one sentence, nothing started.
    again = await run(
        w, "assistant", "promote", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    one_sentence(again, "already running")
    # Another process (a second Core on the same home) is refused by SQLite, not by memory.
    other = Core.open(fewtune_home, embedder=w.core.embedder)
    try:
        with pytest.raises(LimitExceeded, match="already running"):
            await other.promotions.start(owner, "helper", force=True)
    finally:
        await other.providers.close()
        other.close()

    # Bob may not cancel Alice's promotion; Alice may.
    denied = await w.fake.click(progress, "Cancel", user=w.bob)
    await w.fake.answered(denied)
    assert denied.ephemeral and "helper" in denied.text()
    clicked = await w.fake.click(progress, "Cancel", user=w.alice)
    await w.fake.answered(clicked)
    assert clicked.ephemeral and "cancelled" in clicked.text(), clicked.text()
    await w.fake.wait_until(
        lambda: "was cancelled" in progress.content, what="the progress message to end"
    )
    assert not progress.buttons()
    promotion = w.core.promotions.latest(owner, "helper")
    assert promotion.status == "cancelled" and promotion.follower is None


def test_the_database_refuses_a_second_active_promotion(core):
    assistant = core.assistants.create(TERMINAL, "helper", "Answer.")

    def add(status: str) -> None:
        with core.db.conn:
            core.db.table("promotions").insert(
                {
                    "assistant_id": assistant.id,
                    "provider": "local",
                    "base_model": "tiny",
                    "status": status,
                    "created_at": "2026-01-01",
                    "updated_at": "2026-01-01",
                }
            )

    add("succeeded")
    add("running")
    add("failed")
    with pytest.raises(sqlite3.IntegrityError):
        add("queued")
    with pytest.raises(sqlite3.IntegrityError):
        add("evaluating")


def test_the_actor_round_trips_through_json():
    actor = Actor("42", "7", can_manage_guild=True)
    assert Actor.from_dict(json.loads(json.dumps(actor.to_dict()))) == actor
    assert Actor.from_dict(TERMINAL.to_dict()) == TERMINAL


async def test_cancelling_an_assistant_never_promoted_says_nothing_runs(core):
    core.assistants.create(TERMINAL, "fresh", "Answer.")
    with pytest.raises(InvalidInput, match="no running promotion of 'fresh'"):
        await core.promotions.cancel(TERMINAL, "fresh")
    with pytest.raises(NotFound, match="No assistant called 'nosuch'"):
        await core.promotions.cancel(TERMINAL, "nosuch")
