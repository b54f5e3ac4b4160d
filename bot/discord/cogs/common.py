"""What the command cogs share: assistant-name autocomplete and reading an attachment."""

from __future__ import annotations

import discord
from discord import app_commands

from assistants import LimitExceeded
from assistants.example_files import MAX_FILE_BYTES
from bot.discord.actors import actor_of, bot_of


async def assistant_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Only the assistants this user may see here (the core decides), at most 25."""
    core = bot_of(interaction).core
    names = await core.api.complete_names(actor_of(interaction), current)
    return [app_commands.Choice(name=n, value=n) for n in names[:25]]


async def read_attachment(attachment: discord.Attachment) -> bytes:
    """The file's bytes; an oversize file is refused before it is downloaded."""
    if attachment.size > MAX_FILE_BYTES:
        raise LimitExceeded(
            f"{attachment.filename} is {attachment.size / 1e6:.1f} MB; an import file may be at "
            f"most {MAX_FILE_BYTES // (1024 * 1024)} MB. Split it."
        )
    return await attachment.read()
