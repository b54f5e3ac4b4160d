"""Modals: an assistant's definition, an example (the Improve button's modal is with it in
items.py). Field limits are Discord's (4,000 characters at most) or the core's where smaller; the
core validates everything again."""

from __future__ import annotations

from typing import Any

import discord
from discord.ui import Modal, TextInput

from assistants import Assistant
from assistants.assistant import MAX_DESCRIPTION, MAX_STARTERS
from bot.discord.actors import actor_of, bot_of
from bot.discord.replies import guard, say

DISCORD_FIELD_LIMIT = 4000
LONG = discord.TextStyle.paragraph
MODAL_TIMEOUT = 30 * 60  # seconds a user may take to fill one in


class AssistantModal(Modal):
    """Create (no `existing`) or edit an assistant: name, description, instructions, starters,
    history; visibility and layout come from the command's options."""

    def __init__(
        self,
        existing: Assistant | None = None,
        visibility: str | None = None,
        layout: str | None = None,
    ) -> None:
        super().__init__(
            title="Edit assistant" if existing else "New assistant", timeout=MODAL_TIMEOUT
        )
        self.existing = existing
        self.visibility = visibility
        self.layout = layout
        self.name: TextInput = TextInput(
            label="Name", max_length=64, placeholder="e.g. haiku-helper"
        )
        self.description: TextInput = TextInput(
            label="Description", style=LONG, required=False, max_length=MAX_DESCRIPTION
        )
        self.instructions: TextInput = TextInput(
            label="Instructions",
            style=LONG,
            max_length=DISCORD_FIELD_LIMIT,
            placeholder="What the assistant does and how it answers.",
        )
        self.starters: TextInput = TextInput(
            label=f"Conversation starters (one a line, up to {MAX_STARTERS})",
            style=LONG,
            required=False,
            max_length=1000,
        )
        self.history: TextInput = TextInput(
            label="History: earlier exchanges in each prompt",
            required=False,
            max_length=8,
            placeholder="all, or a number (0: each message stands alone)",
        )
        if existing is not None:
            self.name.default = existing.name
            self.description.default = existing.description
            self.instructions.default = existing.instructions
            self.starters.default = "\n".join(existing.starters)
            self.history.default = "all" if existing.history is None else str(existing.history)
        # Five fields: as many as Discord lets a modal hold.
        for field in (self.name, self.description, self.instructions, self.starters, self.history):
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        core = bot_of(interaction).core
        actor = actor_of(interaction)
        values: dict[str, Any] = {
            "description": self.description.value,
            "instructions": self.instructions.value,
            "starters": [s for s in self.starters.value.splitlines() if s.strip()],
            "history": self.history.value,  # text: blank or "all" is every exchange
        }
        if self.visibility:
            values["visibility"] = self.visibility
        if self.layout:
            values["layout"] = self.layout
        async with guard(interaction):
            if self.existing is None:
                assistant = await core.api.create_assistant(
                    actor, self.name.value, values.pop("instructions"), **values
                )
                text = (
                    f"Created **{assistant.name}** ({assistant.visibility}). Add examples with "
                    f"`/example add`, then talk to it with `/chat`."
                )
            else:
                assistant = await core.api.edit_assistant(
                    actor, self.existing.name, name=self.name.value, **values
                )
                text = f"Saved **{assistant.name}** (version {assistant.version})."
            await say(interaction, text)


class ExampleModal(Modal, title="New example"):
    """An example for an assistant: a message and a good answer to it."""

    input: TextInput = TextInput(label="Message", style=LONG, max_length=DISCORD_FIELD_LIMIT)
    output: TextInput = TextInput(label="Good answer", style=LONG, max_length=DISCORD_FIELD_LIMIT)

    def __init__(self, assistant_name: str) -> None:
        super().__init__(timeout=MODAL_TIMEOUT)
        self.assistant_name = assistant_name

    async def on_submit(self, interaction: discord.Interaction) -> None:
        core = bot_of(interaction).core
        async with guard(interaction):
            # Embedding may take a moment (the embedder loads on first use): defer first.
            await interaction.response.defer(ephemeral=True, thinking=True)
            example = await core.api.add_example(
                actor_of(interaction), self.assistant_name, self.input.value, self.output.value
            )
            await say(interaction, f"Added example #{example.id} to **{self.assistant_name}**.")
