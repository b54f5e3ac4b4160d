"""The Discord bot: a commands.Bot holding the Core; cogs per area; commands synced at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
from discord import app_commands
from discord.ext import commands

from assistants import Core, FewtuneError
from assistants.ratelimit import UserRateLimiter
from bot.discord.chatting import Chatter
from bot.discord.cogs import COGS
from bot.discord.items import ITEMS
from bot.discord.promoting import Promoter
from bot.discord.replies import UNEXPECTED, say

log = logging.getLogger("fewtune.discord")
# Discord calls in flight at once from chat handlers (acknowledgements, reply posts and edits).
# Unpaced, a burst (200 users at once) woke every handler in the same turn of the event loop
# and paused it for 100 ms or more; paced by 8, pauses stayed near 25 ms and every
# acknowledgement still landed within half a second (bench/discord_load.py, docs/benchmarks.md).
CALLS_IN_FLIGHT = 8


def intents() -> discord.Intents:
    """Guilds, guild and DM messages, and message content (privileged: needed to read messages
    that mention or reply to the bot in bound channels, thread follow-ups and DMs)."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_messages = True
    chosen.dm_messages = True
    chosen.message_content = True
    return chosen


class FewtuneBot(commands.Bot):
    """fewtune in Discord. Everything it does goes through `core`; it holds no business logic."""

    def __init__(
        self,
        core: Core,
        *,
        sync_guild: int | None = None,
        stream_interval: float = 1.0,
        progress_interval: float = 1.0,
        promotion_poll_seconds: float = 2.0,
        rate_limit_per_minute: int | None = None,
        **options,
    ) -> None:
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(command_prefix=[], intents=intents(), help_command=None, **options)
        self.core = core
        self.sync_guild = sync_guild
        self.stream_interval = stream_interval
        self.progress_interval = progress_interval  # seconds between progress edits
        self.promotion_poll_seconds = promotion_poll_seconds
        per_minute = (
            core.settings.chat.rate_limit_per_minute
            if rate_limit_per_minute is None
            else rate_limit_per_minute
        )
        self.limiter = UserRateLimiter(per_minute)
        self.pace = asyncio.Semaphore(CALLS_IN_FLIGHT)
        self.chatter = Chatter(self)
        self.promoter = Promoter(self)
        self.synced: list[app_commands.AppCommand] = []
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        # First of all: the local model server (if a local model is used) starts in the
        # background while the bot logs in, so that the first chat does not wait for it.
        if await self.core.api.start_local_server():
            log.info("finding or starting the local model server in the background")
        for cog in COGS:
            await self.add_cog(cog(self))
        self.add_dynamic_items(*ITEMS)
        if self.sync_guild:
            guild = discord.Object(id=self.sync_guild)
            self.tree.copy_global_to(guild=guild)
            self.synced = await self.tree.sync(guild=guild)
        else:
            self.synced = await self.tree.sync()
        log.info(
            "synced %d commands %s",
            len(self.synced),
            f"to guild {self.sync_guild}" if self.sync_guild else "globally",
        )
        # Promotions followed before a restart: their messages go on (REST only, no gateway).
        self.promoter.start_resuming()

    async def close(self) -> None:
        await self.promoter.close()
        await super().close()

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: messages are handled by the chat cog's listener."""

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = getattr(error, "original", error)
        if isinstance(cause, FewtuneError):
            await say(interaction, str(cause))
            return
        log.error(
            "command %s failed",
            interaction.command and interaction.command.qualified_name,
            exc_info=cause,
        )
        # The interaction may have expired; the error is logged above either way.
        with contextlib.suppress(discord.HTTPException):
            await say(interaction, UNEXPECTED)
