"""Running the real bot against FakeDiscord, with the fake model (tests/fake_model.py) as its
providers: it speaks the OpenAI chat-completions wire format, so the core's openai client talks
to it unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fake_model import FakeModel

from .server import FakeDiscord

SERVE_TOKEN_ENV = "FEWTUNE_TEST_SERVE_TOKEN"


def write_provider_settings(
    home: Path, serve_url: str, scripted: FakeModel, rate_limit: int = 1000
) -> None:
    """fewtune.toml: provider `fewtune` (the default model `fewtune:echo`) is `serve_url`: the
    fake model, or the real `fewtune serve` where a test needs it; provider `scripted` is always
    the fake model. No retries."""
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
