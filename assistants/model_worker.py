"""The model calls' own process: streams chat completions through the openai client.

`Providers` (assistants/providers.py) starts it once (`python -m assistants.model_worker`) and
talks to it in JSON lines over its pipes. Why a process: the openai client's CPU per chat (the
request, the connection, the server-sent events) competed for the bot's GIL with discord.py and
the core's threads; here it runs beside them on another core. Measured on 200 chats at once
through Discord, 7 pairs side by side: wall time median 2.43 s in a thread of the bot, 2.04 s
here (docs/benchmarks.md).

In, one per line:  {"id", "base_url", "key", "timeout", "max_retries", "provider", "model",
                    "body"}  or  {"cancel": id}
Out, one per line: {"id", "chunk": <the chunk as parsed JSON>} ..., then {"id", "done": true}
                   or {"id", "error": <one sentence>, "connect": <could not connect>}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from assistants.providers import NOT_A_CHUNK, ModelRef, describe, make_client


class Worker:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.clients: dict[tuple[Any, ...], Any] = {}
        self.running: dict[int, asyncio.Task[None]] = {}

    def say(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    def client(self, request: dict[str, Any]) -> Any:
        key = (request["base_url"], request["key"], request["timeout"], request["max_retries"])
        found = self.clients.get(key)
        if found is None:
            found = self.clients[key] = make_client(*key)
        return found

    async def stream(self, request: dict[str, Any]) -> None:
        import openai

        ident = request["id"]
        model = ModelRef(request["provider"], request["model"])
        try:
            # `client.post` with the body as JSON, chunks as parsed JSON (`object`): see
            # Providers for why not `chat.completions.create`.
            stream = await self.client(request).post(
                "/chat/completions",
                body=request["body"],
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async for event in stream:
                self.say({"id": ident, "chunk": event})
            self.say({"id": ident, "done": True})
        except openai.APIConnectionError as exc:
            self.say({"id": ident, "error": describe(model, exc), "connect": True})
        except openai.APIError as exc:
            self.say({"id": ident, "error": describe(model, exc)})
        except (TypeError, AttributeError, IndexError, KeyError, ValueError):
            self.say({"id": ident, "error": NOT_A_CHUNK.format(model.provider)})
        except asyncio.CancelledError:
            pass  # the caller stopped listening
        except Exception as exc:  # one sentence, never a dead worker
            self.say({"id": ident, "error": describe(model, exc)})
        finally:
            self.running.pop(ident, None)

    def handle(self, message: dict[str, Any]) -> None:
        if "cancel" in message:
            task = self.running.pop(message["cancel"], None)
            if task is not None:
                task.cancel()
            return
        self.running[message["id"]] = asyncio.create_task(self.stream(message))


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    worker = Worker(asyncio.StreamWriter(transport, protocol, None, loop))
    while line := await reader.readline():
        worker.handle(json.loads(line))
    for task in list(worker.running.values()):  # stdin closed: the bot is done with us
        task.cancel()
    for client in worker.clients.values():
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
