"""/assistant create|edit|show|list|delete|use|export|import|promote|status|rollback."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING

from assistants.assistant import can_manage
from bot.discord.actors import actor_of
from bot.discord.cogs.common import assistant_names, read_attachment
from bot.discord.items import confirm_delete_view, starters_view
from bot.discord.modals import DISCORD_FIELD_LIMIT, AssistantModal
from bot.discord.promoting import promotion_summary
from bot.discord.replies import guard, say

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot

Visibility = Literal["private", "guild", "public"]
Layout = Literal["turns", "system", "pairs"]  # assistants.prompt.LAYOUTS
LAYOUT_HELP = "How examples sit in the prompt: turns, system (one block) or pairs (Input/Output)"
EMBED_FIELD = 1024


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AssistantCog(commands.GroupCog, group_name="assistant"):
    """Build and manage assistants."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        super().__init__()

    @app_commands.command()
    @app_commands.describe(
        visibility="Who may use it (default: this server, or only you in DMs)",
        layout=LAYOUT_HELP,
    )
    async def create(
        self,
        interaction: discord.Interaction,
        visibility: Visibility | None = None,
        layout: Layout | None = None,
    ) -> None:
        """Create an assistant: name, description, instructions, conversation starters, history."""
        await interaction.response.send_modal(AssistantModal(visibility=visibility, layout=layout))

    @app_commands.command()
    @app_commands.describe(
        name="The assistant", visibility="Change who may use it", layout=LAYOUT_HELP
    )
    @app_commands.autocomplete(name=assistant_names)
    async def edit(
        self,
        interaction: discord.Interaction,
        name: str,
        visibility: Visibility | None = None,
        layout: Layout | None = None,
    ) -> None:
        """Edit an assistant (its owner, or members with Manage Server)."""
        async with guard(interaction):
            assistant = await self.core.api.managed_assistant(actor_of(interaction), name, "edit")
            if len(assistant.instructions) > DISCORD_FIELD_LIMIT:
                await say(
                    interaction,
                    f"The instructions of {assistant.name!r} are longer than Discord's "
                    f"{DISCORD_FIELD_LIMIT:,}-character field; edit them with the fewtune CLI.",
                )
                return
            await interaction.response.send_modal(AssistantModal(assistant, visibility, layout))

    @app_commands.command()
    @app_commands.describe(name="The assistant")
    @app_commands.autocomplete(name=assistant_names)
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        """Show an assistant; its conversation starters start a chat."""
        async with guard(interaction):
            actor = actor_of(interaction)
            assistant = await self.core.api.assistant(actor, name)
            count = await self.core.api.count_examples(actor, assistant.name)
            embed = discord.Embed(title=assistant.name, description=assistant.description or None)
            embed.add_field(name="Visibility", value=assistant.visibility)
            embed.add_field(name="Model", value=assistant.active_model)
            embed.add_field(name="Examples", value=str(count))
            embed.add_field(
                name="History", value="all" if assistant.history is None else str(assistant.history)
            )
            embed.add_field(name="Layout", value=assistant.layout)
            embed.add_field(name="Owner", value=f"<@{assistant.owner_id}>")
            if can_manage(actor, assistant):  # only they may see the instructions
                embed.add_field(
                    name="Instructions",
                    value=clip(assistant.instructions, EMBED_FIELD),
                    inline=False,
                )
            view = starters_view(assistant)
            await say(interaction, "", embed=embed, view=view or MISSING)

    @app_commands.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """The assistants you can use here."""
        async with guard(interaction):
            found = await self.core.api.assistants(actor_of(interaction))
            if not found:
                await say(interaction, "No assistants yet: create one with `/assistant create`.")
                return
            lines = [
                f"**{a.name}** ({a.visibility}) {clip(a.description, 80)}".rstrip()
                for a in found[:50]
            ]
            more = f"\n…and {len(found) - 50} more." if len(found) > 50 else ""
            embed = discord.Embed(
                title="Assistants", description=clip("\n".join(lines), 4000) + more
            )
            await say(interaction, "", embed=embed)

    @app_commands.command()
    @app_commands.describe(name="The assistant")
    @app_commands.autocomplete(name=assistant_names)
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        """Delete an assistant with its examples and conversations (asks to confirm)."""
        async with guard(interaction):
            assistant = await self.core.api.managed_assistant(actor_of(interaction), name, "delete")
            await say(
                interaction,
                f"Delete **{assistant.name}** with all its examples and conversations?",
                view=confirm_delete_view(assistant),
            )

    @app_commands.command()
    @app_commands.describe(name="The assistant that answers here, or none to unbind")
    @app_commands.autocomplete(name=assistant_names)
    async def use(self, interaction: discord.Interaction, name: str) -> None:
        """Make an assistant answer in this channel or thread when mentioned or replied to."""
        async with guard(interaction):
            if interaction.channel_id is None:
                return
            unbind = name.strip().lower() == "none"
            assistant = await self.core.api.bind(
                actor_of(interaction), str(interaction.channel_id), None if unbind else name
            )
            if assistant is None:
                await say(interaction, "No assistant is bound to this channel any more.")
            else:
                await say(
                    interaction,
                    f"**{assistant.name}** now answers here when mentioned or replied to.",
                    ephemeral=False,
                )

    @app_commands.command()
    @app_commands.describe(name="The assistant")
    @app_commands.autocomplete(name=assistant_names)
    async def export(self, interaction: discord.Interaction, name: str) -> None:
        """Download an assistant as a JSON file: definition and examples."""
        async with guard(interaction):
            data = await self.core.api.export_assistant(actor_of(interaction), name)
            raw = json.dumps(data, ensure_ascii=False, indent=1).encode()
            file = discord.File(io.BytesIO(raw), filename=f"{data['assistant']['name']}.json")
            count = len(data["examples"])
            await say(
                interaction, f"**{data['assistant']['name']}** with {count} examples.", file=file
            )

    @app_commands.command(name="import")
    @app_commands.describe(file="A JSON file from /assistant export", name="A new name for it")
    async def import_(
        self, interaction: discord.Interaction, file: discord.Attachment, name: str | None = None
    ) -> None:
        """Create an assistant from a file made by /assistant export."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            data = await read_attachment(file)
            assistant, result = await self.core.api.import_assistant(
                actor_of(interaction), data, name
            )
            await say(
                interaction,
                f"Imported **{assistant.name}** with {result.added} examples"
                f"{f' ({result.duplicates} duplicates skipped)' if result.duplicates else ''}.",
            )

    # -- promotion (the work is in bot/discord/promoting.py) ----------------------------------

    @app_commands.command()
    @app_commands.describe(
        name="The assistant", force="Promote with little data; switch even if not better"
    )
    @app_commands.autocomplete(name=assistant_names)
    async def promote(
        self, interaction: discord.Interaction, name: str, force: bool = False
    ) -> None:
        """Fine-tune the assistant's own model on its examples and conversations (asks first)."""
        async with guard(interaction):
            await self.bot.promoter.ask(interaction, name, force)

    @app_commands.command()
    @app_commands.describe(name="The assistant")
    @app_commands.autocomplete(name=assistant_names)
    async def status(self, interaction: discord.Interaction, name: str) -> None:
        """The latest promotion of an assistant: job status, evaluation, switch."""
        async with guard(interaction):
            await interaction.response.defer(ephemeral=True, thinking=True)
            actor = actor_of(interaction)
            promotion = await self.core.promotions.refresh(actor, name)
            assistant = await self.core.api.assistant(actor, name)
            await say(interaction, promotion_summary(assistant.name, promotion))

    @app_commands.command()
    @app_commands.describe(name="The assistant")
    @app_commands.autocomplete(name=assistant_names)
    async def rollback(self, interaction: discord.Interaction, name: str) -> None:
        """Return an assistant to the model it used before its last promotion."""
        async with guard(interaction):
            assistant = await self.core.api.rollback(actor_of(interaction), name)
            await say(
                interaction, f"**{assistant.name}** now answers with `{assistant.active_model}`."
            )
