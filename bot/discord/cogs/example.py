"""/example add|import|list|remove|corrections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.actors import actor_of
from bot.discord.cogs.common import assistant_names, read_attachment
from bot.discord.items import AdoptButton, view_of
from bot.discord.modals import ExampleModal
from bot.discord.replies import guard, say

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot

PAGE = 10
CORRECTIONS_PAGE = 5  # one button each, and the embed stays readable


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ExampleCog(commands.GroupCog, group_name="example"):
    """Teach an assistant by example."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        super().__init__()

    @app_commands.command()
    @app_commands.describe(assistant="The assistant to teach")
    @app_commands.autocomplete(assistant=assistant_names)
    async def add(self, interaction: discord.Interaction, assistant: str) -> None:
        """Add an example: a message and a good answer."""
        async with guard(interaction):
            found = await self.core.api.managed_assistant(
                actor_of(interaction), assistant, "add examples to"
            )
            await interaction.response.send_modal(ExampleModal(found.name))

    @app_commands.command(name="import")
    @app_commands.describe(assistant="The assistant to teach", file="JSONL or CSV (input,output)")
    @app_commands.autocomplete(assistant=assistant_names)
    async def import_(
        self, interaction: discord.Interaction, assistant: str, file: discord.Attachment
    ) -> None:
        """Import examples from a JSONL or CSV file: all of them, or none if a line is bad."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            data = await read_attachment(file)
            result = await self.core.api.import_examples(
                actor_of(interaction), assistant, file.filename, data
            )
            skipped = f" ({result.duplicates} duplicates skipped)" if result.duplicates else ""
            await say(
                interaction, f"Imported {result.added} examples into **{assistant}**{skipped}."
            )

    @app_commands.command(name="list")
    @app_commands.describe(assistant="The assistant", page="Page number (10 a page)")
    @app_commands.autocomplete(assistant=assistant_names)
    async def list_(
        self,
        interaction: discord.Interaction,
        assistant: str,
        page: app_commands.Range[int, 1, 100_000] = 1,
    ) -> None:
        """List an assistant's examples, 10 a page."""
        async with guard(interaction):
            actor = actor_of(interaction)
            total = await self.core.api.count_examples(actor, assistant)
            pages = max(1, -(-total // PAGE))
            found = await self.core.api.examples(actor, assistant, (page - 1) * PAGE, PAGE)
            if not found:
                await say(
                    interaction, f"**{assistant}** has no examples on page {page} ({total} in all)."
                )
                return
            lines = [f"`#{e.id}` {one_line(e.input, 80)} → {one_line(e.output, 80)}" for e in found]
            embed = discord.Embed(title=f"{assistant}: examples", description="\n".join(lines))
            embed.set_footer(text=f"Page {page} of {pages} · {total} examples")
            await say(interaction, "", embed=embed)

    @app_commands.command()
    @app_commands.describe(
        assistant="The assistant", id="The example's number (from /example list)"
    )
    @app_commands.autocomplete(assistant=assistant_names)
    async def remove(self, interaction: discord.Interaction, assistant: str, id: int) -> None:
        """Remove one example."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            example = await self.core.api.remove_example(actor_of(interaction), assistant, id)
            await say(interaction, f"Removed example #{example.id} from **{assistant}**.")

    @app_commands.command()
    @app_commands.describe(assistant="The assistant", page="Page number (5 a page)")
    @app_commands.autocomplete(assistant=assistant_names)
    async def corrections(
        self,
        interaction: discord.Interaction,
        assistant: str,
        page: app_commands.Range[int, 1, 100_000] = 1,
    ) -> None:
        """Review better answers users gave ("Improve"); add the good ones as examples."""
        async with guard(interaction):
            found = await self.core.api.corrections(actor_of(interaction), assistant)
            pages = max(1, -(-len(found) // CORRECTIONS_PAGE))
            shown = found[(page - 1) * CORRECTIONS_PAGE : page * CORRECTIONS_PAGE]
            if not shown:
                await say(
                    interaction,
                    f"**{assistant}** has no corrections to review on page {page} "
                    f"({len(found)} in all).",
                )
                return
            embed = discord.Embed(title=f"{assistant}: corrections to review")
            for f in shown:
                embed.add_field(
                    name=f"#{f.id} (reply #{f.message_id})",
                    value=f"{one_line(f.correction or '', 300)}\n— <@{f.user_id}>",
                    inline=False,
                )
            noun = "correction" if len(found) == 1 else "corrections"
            embed.set_footer(text=f"Page {page} of {pages} · {len(found)} {noun}")
            view = view_of(*(AdoptButton(f.id, f"Add #{f.id} as example") for f in shown))
            await say(interaction, "", embed=embed, view=view)
