"""A reply shown while it streams: edited at most once per interval, split into messages of at
most 2,000 characters, the feedback buttons under the last part once it is complete."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import discord
from discord.utils import MISSING

from bot.discord.split import split_message

NO_MENTIONS = discord.AllowedMentions.none()
Post = Callable[[str, discord.ui.View | None], Awaitable[discord.Message]]
PLACEHOLDER = "…"


class LiveReply:
    """Renders text into a growing list of messages. `post` sends one new message."""

    def __init__(
        self, post: Post, interval: float = 1.0, pace: asyncio.Semaphore | None = None
    ) -> None:
        self.post = post
        self.interval = interval
        self.pace = pace  # bounds the Discord calls in flight across replies (see client.py)
        self.messages: list[discord.Message] = []
        self._shown: list[str] = []
        self._last: float | None = None  # when the text was last shown, or streaming began

    async def update(self, text: str) -> None:
        """Show the text so far once `interval` has passed since it was last shown, or since the
        first text came. A reply that completes within the interval (most do) is then shown
        in one message, buttons included, instead of a post and an edit right after it."""
        now = time.monotonic()
        if self._last is None:
            self._last = now
        elif now - self._last >= self.interval:
            await self.render(text)

    async def note(self, sentence: str) -> None:
        """Show why the reply has not begun (the local model server is starting) where it will
        be; the reply's text then replaces it."""
        await self.render(f"⏳ {sentence}")

    async def render(self, text: str, view: discord.ui.View | None = None) -> None:
        self._last = time.monotonic()
        parts = split_message(text) or [PLACEHOLDER]
        for i, part in enumerate(parts):
            last_view = view if i == len(parts) - 1 else None
            if i < len(self.messages):
                if self._shown[i] != part or last_view is not None:
                    # MISSING leaves the message's buttons as they are.
                    view_arg = last_view if last_view is not None else MISSING
                    async with self._paced():
                        edited = await self.messages[i].edit(
                            content=part, allowed_mentions=NO_MENTIONS, view=view_arg
                        )
                    self.messages[i] = edited or self.messages[i]
                    self._shown[i] = part
            else:
                async with self._paced():
                    self.messages.append(await self.post(part, last_view))
                self._shown.append(part)

    def _paced(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self.pace if self.pace is not None else contextlib.nullcontext()

    @property
    def last(self) -> discord.Message | None:
        return self.messages[-1] if self.messages else None
