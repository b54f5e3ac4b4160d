"""One message that shows a long job's progress: edited at most once per interval, always
ending with the latest text (a pending edit waits out the interval instead of being dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord

from bot.discord.replies import NO_MENTIONS

log = logging.getLogger("fewtune.discord")


class ThrottledMessage:
    """Shows text in `message`, editing it at most once every `interval` seconds."""

    def __init__(
        self, message: discord.Message | discord.PartialMessage, interval: float = 1.0
    ) -> None:
        self.message = message
        self.interval = interval
        self._last = float("-inf")
        self._pending: str | None = None
        self._later: asyncio.Task[None] | None = None

    async def show(self, text: str) -> None:
        """Show `text` now, or once the interval has passed (newer text replaces it)."""
        self._pending = text
        if self._later is not None and not self._later.done():
            return
        wait = self._last + self.interval - time.monotonic()
        if wait <= 0:
            await self._edit()
        else:
            self._later = asyncio.create_task(self._edit_after(wait))

    async def _edit_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._edit()

    async def _edit(self, **extra: object) -> None:
        text, self._pending = self._pending, None
        if text is None and not extra:
            return
        self._last = time.monotonic()
        kwargs = {"allowed_mentions": NO_MENTIONS, **extra}
        if text is not None:
            kwargs["content"] = text
        try:
            self.message = await self.message.edit(**kwargs) or self.message  # type: ignore[arg-type]
        except discord.HTTPException as exc:
            # A deleted message or a lost permission must not stop the job being followed.
            log.warning("could not edit the progress message %s: %s", self.message.id, exc)

    def cancel(self) -> None:
        """Drop a pending edit (the bot is stopping: its HTTP session is about to close)."""
        if self._later is not None:
            self._later.cancel()

    async def finish(self, text: str, files: list[discord.File] | None = None) -> None:
        """The last edit (with its attachments, if any, and no buttons: nothing is left to
        cancel), still no sooner than the interval."""
        if self._later is not None:
            self._later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._later
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._pending = text
        await self._edit(attachments=files or [], view=None)
