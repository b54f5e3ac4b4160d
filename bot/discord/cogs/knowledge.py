"""/knowledge add|list|remove: the files an assistant answers from (its managers only; the core
decides who may)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.actors import actor_of
from bot.discord.cogs.common import assistant_names
from bot.discord.replies import guard, say
from bot.wording import counted, file_size

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot


class KnowledgeCog(commands.GroupCog, group_name="knowledge"):
    """Files an assistant answers from, with citations."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        super().__init__()

    @app_commands.command()
    @app_commands.describe(
        assistant="The assistant", file=".txt, .md, .pdf, .html, .csv or .json to answer from"
    )
    @app_commands.autocomplete(assistant=assistant_names)
    async def add(
        self, interaction: discord.Interaction, assistant: str, file: discord.Attachment
    ) -> None:
        """Add a knowledge file: the assistant answers from it and cites it."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            actor = actor_of(interaction)
            found = await self.core.api.managed_assistant(actor, assistant, "add knowledge to")
            self.core.knowledge.check_size(file.filename, file.size)  # before it is downloaded
            data = await file.read()
            added = await self.core.api.add_knowledge(actor, found.name, [(file.filename, data)])
            chunks = counted(sum(f.chunks for f in added), "chunk")
            await say(
                interaction,
                f"Added {file.filename} to **{found.name}** as knowledge file "
                f"#{added[0].id} ({chunks}).",
            )

    @app_commands.command(name="list")
    @app_commands.describe(assistant="The assistant")
    @app_commands.autocomplete(assistant=assistant_names)
    async def list_(self, interaction: discord.Interaction, assistant: str) -> None:
        """List an assistant's knowledge files."""
        async with guard(interaction):
            files = await self.core.api.knowledge_files(actor_of(interaction), assistant)
            if not files:
                await say(
                    interaction,
                    f"**{assistant}** has no knowledge files; add one with `/knowledge add`.",
                )
                return
            lines = [
                f"`#{f.id}` {f.name} · {f.kind} · {file_size(f.size)} · "
                f"{counted(f.chunks, 'chunk')}"
                for f in files
            ]
            embed = discord.Embed(
                title=f"{assistant}: knowledge files", description="\n".join(lines)
            )
            embed.set_footer(text=counted(len(files), "file"))
            await say(interaction, "", embed=embed)

    @app_commands.command()
    @app_commands.describe(
        assistant="The assistant", file="The file's number (from /knowledge list)"
    )
    @app_commands.autocomplete(assistant=assistant_names)
    async def remove(self, interaction: discord.Interaction, assistant: str, file: int) -> None:
        """Remove a knowledge file and its chunks."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            removed = await self.core.api.remove_knowledge(actor_of(interaction), assistant, file)
            await say(
                interaction,
                f"Removed knowledge file #{removed.id} {removed.name} from **{assistant}**.",
            )
