"""Answering interactions: one ephemeral sentence for refusals, and a guard that turns the
core's errors into that sentence. Nothing is swallowed: unexpected errors are logged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import discord
from discord.utils import MISSING

from assistants import FewtuneError

log = logging.getLogger("fewtune.discord")
NO_MENTIONS = discord.AllowedMentions.none()
UNEXPECTED = "Something went wrong on fewtune's side; it has been logged. Please try again."


async def say(
    interaction: discord.Interaction, text: str, *, ephemeral: bool = True, **kw: Any
) -> None:
    """Send text as the response, or as a follow-up once the interaction is answered."""
    content = text or MISSING  # an embed alone: no empty content
    if interaction.response.is_done():
        await interaction.followup.send(
            content, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, **kw
        )
    else:
        await interaction.response.send_message(
            content, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, **kw
        )


async def withdraw(interaction: discord.Interaction, text: str) -> None:
    """After a public defer, refuse privately: remove the "thinking…" placeholder (a follow-up
    would fill it, public) and say `text` to the user alone."""
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


@asynccontextmanager
async def guard(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Turn a FewtuneError into its one ephemeral sentence; log anything else and say so."""
    try:
        yield
    except FewtuneError as exc:
        await say(interaction, str(exc))
    except discord.HTTPException:
        raise
    except Exception:
        log.exception("interaction %s failed", interaction.data)
        await say(interaction, UNEXPECTED)
