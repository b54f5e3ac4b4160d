"""The bot's side of the model calls' process (assistants/model_worker.py): starts it, sends it
chats, hands each its stream of messages back. Lives on the providers' model loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import AsyncGenerator
from typing import Any

from storage.processes import python_env

STOPPED = "The model calls' process stopped unexpectedly; try again."


class ModelProcess:
    """One `python -m assistants.model_worker`, and the chats in flight through it."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()  # one start at a time (a warm-up and a first chat)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the worker unless it runs."""
        async with self._starting:
            if not self.alive:
                await self._start()

    async def _start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "assistants.model_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=python_env(),
            limit=2**26,
        )
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                message = json.loads(line)
                waiting = self._waiting.get(message["id"])
                if waiting is not None:
                    waiting.put_nowait(message)
        finally:
            # The process ended (or its pipe broke): every chat in flight gets one sentence.
            for waiting in self._waiting.values():
                waiting.put_nowait({"error": STOPPED})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    async def stream(self, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Send one chat; yield its messages: chunks, then `done` or `error` (the last one)."""
        if not self.alive:
            await self.start()
        ident = next(self._ids)
        waiting: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiting[ident] = waiting
        finished = False
        try:
            self._send({**request, "id": ident})
            while True:
                message = await waiting.get()
                finished = "chunk" not in message
                yield message
                if finished:
                    return
        finally:
            self._waiting.pop(ident, None)
            if not finished and self.alive:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    self._send({"cancel": ident})

    async def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()  # the worker ends when its input does
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
