"""/privacy optout|optin|forget."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.replies import guard, say

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot


class PrivacyCog(commands.GroupCog, group_name="privacy"):
    """Your data: training opt-out, and forgetting your messages."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        super().__init__()

    @app_commands.command()
    async def optout(self, interaction: discord.Interaction) -> None:
        """Keep your messages out of training data (you can still chat)."""
        async with guard(interaction):
            await self.core.api.opt_out(str(interaction.user.id))
            await say(interaction, "Done: your messages will not be used to train any assistant.")

    @app_commands.command()
    async def optin(self, interaction: discord.Interaction) -> None:
        """Allow your messages in training data again."""
        async with guard(interaction):
            await self.core.api.opt_in(str(interaction.user.id))
            await say(interaction, "Done: your conversations may again help train assistants.")

    @app_commands.command()
    async def forget(self, interaction: discord.Interaction) -> None:
        """Delete every message of yours that fewtune stored, everywhere."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            count = await self.core.api.forget(str(interaction.user.id))
            noun = "message" if count == 1 else "messages"
            await say(interaction, f"Deleted {count} {noun} of yours, with the replies to them.")
