"""Generation that stops when nobody listens.

Starlette runs a plain handler to its end even after its client has gone, and an answer left
generating holds the engine for every request behind it. So:
- `while_listening(request, work)` awaits a request's work (its wait for a turn, tokenizing,
  generating) and cancels it as soon as the ASGI receive channel says `http.disconnect`: a
  request still waiting gives up its place, a generation stops at its next token (the engine's
  stream sets its cancel event when its reader stops).
- `EventStream` is the server-sent events response: when the stream ends, however it ends (the
  client closed it, the server is stopping), it closes its events (so the generation under them
  stops) and gives back the engine's turn it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from training.serving.admission import Turn

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready: there is nobody to answer."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def while_listening(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result; if the client disconnects first, `work` is cancelled (and has cleaned
    up when this returns) and ClientGone is raised."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientGone()
    return task.result()


class EventStream(StreamingResponse):
    """`text/event-stream` of `events`, holding `turn` on the engine until the stream ends."""

    def __init__(self, events: AsyncIterator[str], turn: Turn) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events
        self._turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette stops sending when the client disconnects but leaves the events' generator
        # suspended: closed here, its engine stream stops generating at once.
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                closing = getattr(self._events, "aclose", None)
                if closing is not None:
                    await closing()
            self._turn.give_back()
