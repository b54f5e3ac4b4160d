"""Admission to the engine: `max_batch` requests at a time, a short queue behind them, 429 past it.

The engine decodes up to `[server] max_batch` chats together (training.serving.batching); a
request past them waits for a row, and never unboundedly: at most `[server] max_waiting` wait,
each at most `[server] max_wait_s` seconds; past either the server answers 429 with a
`Retry-After`, as OpenAI does when it is rate limiting. A request whose client leaves while it
waits gives up its place (its task is cancelled) and never reaches the engine.

Routes hold a turn for all their engine work (tokenizing, generating, scoring):
`async with admission.turn() as turn:`; a streamed answer takes the turn along
(`turn.pass_on()`) and gives it back when the stream ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator

from training.serving.engine import EngineError

RECENT_TURNS = 8  # the turns whose lengths estimate how long the queue takes to move
RETRY_AFTER_MAX = 60  # seconds; the openai client waits out a Retry-After only up to 60 s


class ServerBusy(EngineError):
    """Answered 429: the queue is full, or a request waited its longest."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Turn:
    """One request's hold on the engine; given back once, by whoever holds it last."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._held = True
        self._since = time.monotonic()

    def pass_on(self) -> Turn:
        """The same hold, now owned by the caller (a stream), no longer given back here."""
        self._held = False
        taken = Turn(self._admission)
        taken._since = self._since
        return taken

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._admission._release(time.monotonic() - self._since)


class Admission:
    """Lets `capacity` requests at a time use the engine; `max_waiting` may wait, `max_wait_s`
    each."""

    def __init__(self, max_waiting: int, max_wait_s: float, capacity: int = 1) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._active = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_TURNS)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """Wait for the engine (ServerBusy when the queue is full or the wait too long)."""
        await self._enter()
        turn = Turn(self)
        try:
            yield turn
        finally:
            turn.give_back()

    async def _enter(self) -> None:
        if self._active < self.capacity and not self._waiting:
            self._active += 1
            return
        if len(self._waiting) >= self.max_waiting:
            raise self._busy_error(f"its queue is full ([server] max_waiting = {self.max_waiting})")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ready)
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.max_wait_s)
        except BaseException as exc:  # waited too long, or the client left: give up the place
            if ready.done() and not ready.cancelled():
                self._release(None)  # handed the turn just as it gave up: pass it on
            else:
                ready.cancel()
                self._waiting.remove(ready)
            if isinstance(exc, TimeoutError):
                raise self._busy_error(
                    f"this request waited {self.max_wait_s:g} s ([server] max_wait_s)"
                ) from None
            raise

    def _release(self, seconds: float | None) -> None:
        if seconds is not None:
            self._recent.append(seconds)
        while self._waiting:
            ready = self._waiting.popleft()
            if not ready.done():
                ready.set_result(None)  # the turn goes straight to the next in line
                return
        self._active -= 1

    def _busy_error(self, why: str) -> ServerBusy:
        seconds = self.retry_after()
        return ServerBusy(
            f"The server is busy with other requests: {why}; try again in {seconds} s.", seconds
        )

    def retry_after(self) -> int:
        """Seconds until a new request could likely start: a recent turn's length (1 s before
        any) for each `capacity` requests ahead in the queue, within 1..60."""
        typical = sum(self._recent) / len(self._recent) if self._recent else 1.0
        estimate = math.ceil(typical * (len(self._waiting) // self.capacity + 1))
        return max(1, min(RETRY_AFTER_MAX, estimate))
