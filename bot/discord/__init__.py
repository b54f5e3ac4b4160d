"""The Discord frontend: `run_bot(settings)` runs fewtune's bot until Ctrl-C or SIGTERM.

Environment: DISCORD_TOKEN (required); FEWTUNE_DISCORD_GUILD (sync commands to that guild only,
for development); FEWTUNE_DISCORD_API_BASE and FEWTUNE_DISCORD_GATEWAY (a Discord-compatible
server other than discord.com, see endpoints.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal

from bot.discord.client import FewtuneBot
from bot.discord.endpoints import redirect
from bot.discord.split import split_message
from storage.settings import Settings

log = logging.getLogger("fewtune.discord")

__all__ = ["FewtuneBot", "MissingToken", "run_bot", "split_message"]


class MissingToken(RuntimeError):
    """DISCORD_TOKEN is not set."""


def sync_guild_from_env() -> int | None:
    raw = os.environ.get("FEWTUNE_DISCORD_GUILD", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"FEWTUNE_DISCORD_GUILD must be a guild id (digits), not {raw!r}.")
    return int(raw)


async def serve(settings: Settings, token: str, *, ready: asyncio.Event | None = None) -> None:
    """Run the bot until it is closed or the process gets SIGINT/SIGTERM; always closes the core."""
    from assistants import Core

    redirect()
    core = Core(settings)
    await core.api.open_index()
    try:  # the model calls' process, so that the first chat does not wait for it
        await core.providers.warm_up()
    except OSError as exc:  # each chat tries again, and says so if it cannot
        log.warning("the model calls' process did not start: %s", exc)
    # Start-up objects (chromadb, the embedder) never die: keep them out of the garbage
    # collector's full passes, which otherwise pause the event loop for hundreds of ms.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible outside the main thread or on Windows: Ctrl-C still ends asyncio.run.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with FewtuneBot(core, sync_guild=sync_guild_from_env()) as bot:
            runner = asyncio.create_task(bot.start(token))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                log.info("stopping: closing the gateway connection")
                await bot.close()
            stopper.cancel()
            await runner  # re-raises a login or connection failure
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await core.providers.close()  # the model clients' connections
        core.close()


def run_bot(settings: Settings) -> None:
    """`fewtune bot`: run until Ctrl-C or SIGTERM. Raises MissingToken without DISCORD_TOKEN."""
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise MissingToken(
            "Set DISCORD_TOKEN to your bot's token (see docs/discord.md for creating one)."
        )
    asyncio.run(serve(settings, token))
