"""Who acts, and where: a core Actor from a Discord interaction or message, and the bot it
came to."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord

from assistants import Actor

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot


def bot_of(interaction: discord.Interaction) -> FewtuneBot:
    return cast("FewtuneBot", interaction.client)


def actor_of(interaction: discord.Interaction) -> Actor:
    """The interaction's user in its guild; Manage Server comes from the permissions Discord sent."""
    guild_id = interaction.guild_id
    return Actor(
        user_id=str(interaction.user.id),
        guild_id=str(guild_id) if guild_id else None,
        can_manage_guild=bool(guild_id) and interaction.permissions.manage_guild,
    )


def actor_of_message(message: discord.Message) -> Actor:
    """A message's author; Manage Server from the author's roles in the cached guild."""
    author = message.author
    manage = isinstance(author, discord.Member) and author.guild_permissions.manage_guild
    return Actor(
        user_id=str(author.id),
        guild_id=str(message.guild.id) if message.guild else None,
        can_manage_guild=bool(manage),
    )
