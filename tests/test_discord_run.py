"""`run_bot`: a real process connects to the loopback Discord from the environment alone, and
stops cleanly on SIGTERM; without DISCORD_TOKEN it says what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from discord_fake import FakeDiscord

ROOT = Path(__file__).resolve().parent.parent
RUN = (
    "from storage.settings import load_settings; from bot.discord import run_bot; "
    "run_bot(load_settings())"
)


@pytest.mark.slow
async def test_process_connects_syncs_to_one_guild_and_stops_on_sigterm(fewtune_home):
    async with FakeDiscord() as fake:
        owner = fake.add_user("olivia")
        guild = fake.add_guild("dev", owner)
        # The default model is the embedded local one: the bot would start its server (about a
        # minute of both cores, and it outlives the bot); tests/test_discord_startup.py tests that.
        (fewtune_home / "fewtune.toml").write_text("[server]\nstart_with_bot = false\n")
        env = {
            **os.environ,
            **fake.env(),
            "FEWTUNE_HOME": str(fewtune_home),
            "FEWTUNE_DISCORD_GUILD": str(guild.id),
            "PYTHONPATH": str(ROOT),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RUN,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            await fake.wait_until(lambda: fake.sessions, 120, "the bot process to connect")
            assert fake.command_syncs[-1][1] == guild.id, "synced to the development guild only"
            assert {c["name"] for c in fake.commands[guild.id]} >= {"assistant", "chat"}
            assert None not in fake.commands
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        output = (await process.stdout.read()).decode()
        assert code == 0, output
        assert "Traceback" not in output
        await fake.wait_until(lambda: not fake.sessions, 5, "the gateway connection to close")


def test_missing_token_is_one_sentence(fewtune_home):
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "Set DISCORD_TOKEN" in done.stderr
