"""Running the real bot against FakeDiscord, and a loopback OpenAI-compatible model to answer.

Chat goes to the real `fewtune serve` app with its built-in `echo` model (`real_echo_server`).
`EchoModel` is for what that cannot do: a reply a test writes (long, with code, with mentions),
a chosen pace of chunks, a provider that goes down. It speaks the OpenAI chat-completions wire
format, so the core's openai client talks to it unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from .server import FakeDiscord


class EchoModel:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that echoes the last message."""

    def __init__(self, delay: float = 0.0, chunk_delay: float = 0.0, reply: str | None = None):
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.reply = reply  # a fixed answer instead of the echo
        self.requests: list[dict] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> EchoModel:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self._chat)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer_to(self, body: dict) -> str:
        if self.reply is not None:
            return self.reply
        last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        return f"echo: {last}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        await asyncio.sleep(self.delay)
        text = self.answer_to(body)
        created = int(time.time())
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-echo",
                    "object": "chat.completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(data: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        base = {
            "id": "chatcmpl-echo",
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
        }
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            await event(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": len(words),
            "total_tokens": 10 + len(words),
        }
        await event({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response


SERVE_TOKEN_ENV = "FEWTUNE_TEST_SERVE_TOKEN"


@contextmanager
def real_echo_server(home: Path, echo_delay: float = 0.0) -> Iterator[str]:
    """The real `fewtune serve` app (model `echo`, no weights) under uvicorn in a thread;
    yields its /v1 base URL. Its bearer token is in $FEWTUNE_TEST_SERVE_TOKEN."""
    from server_fixtures import running_app

    from storage.settings import ServerSettings, Settings
    from training.serving.app import create_app

    token = os.environ.setdefault(SERVE_TOKEN_ENV, secrets.token_urlsafe(16))
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, server=ServerSettings(model="echo", echo_delay=echo_delay))
    with running_app(create_app(settings, token)) as base_url:
        yield base_url


def write_provider_settings(
    home: Path, serve_url: str, scripted: EchoModel, rate_limit: int = 1000
) -> None:
    """fewtune.toml: provider `fewtune` is the real server (default model `fewtune:echo`);
    provider `scripted` is the EchoModel, for replies a test writes itself. No retries."""
    (home / "fewtune.toml").write_text(
        "[providers.fewtune]\n"
        f'base_url = "{serve_url}"\n'
        f'api_key_env = "{SERVE_TOKEN_ENV}"\n'
        "max_retries = 0\n"
        "timeout = 30.0\n"
        "[providers.scripted]\n"
        f'base_url = "{scripted.base_url}"\n'
        "max_retries = 0\n"
        "timeout = 30.0\n"
        "[chat]\n"
        'default_model = "fewtune:echo"\n'
        f"rate_limit_per_minute = {rate_limit}\n",
        encoding="utf-8",
    )


@asynccontextmanager
async def running_bot(fake: FakeDiscord, core: Any, **options: Any) -> AsyncIterator[Any]:
    """The real FewtuneBot, connected to `fake`, ready for interactions."""
    from bot.discord.client import FewtuneBot
    from bot.discord.endpoints import redirect

    redirect(fake.api_base, fake.gateway_url)
    options.setdefault("guild_ready_timeout", 0.05)
    bot = FewtuneBot(core, **options)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_until(
            lambda: (task.done() and task.result()) or (bot.is_ready() and fake.sessions),
            30,
            "the bot to log in, sync its commands and connect",
        )
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 10)
