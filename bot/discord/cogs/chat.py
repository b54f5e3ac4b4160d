"""/chat assistant message, and messages addressed to the bot (mentions, replies, threads, DMs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.cogs.common import assistant_names

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot


class ChatCog(commands.Cog):
    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot

    @app_commands.command()
    @app_commands.describe(assistant="Who answers", message="What you ask")
    @app_commands.autocomplete(assistant=assistant_names)
    async def chat(
        self,
        interaction: discord.Interaction,
        assistant: str,
        message: app_commands.Range[str, 1, 4000],
    ) -> None:
        """Ask an assistant; the answer opens a thread for follow-ups."""
        await self.bot.chatter.answer_interaction(interaction, assistant, message)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        await self.bot.chatter.answer_message(message)
