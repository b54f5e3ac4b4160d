"""Buttons that survive restarts: their custom_id carries what they act on (discord.py
DynamicItem), so a click works whenever it comes. Each turns into one core call. The modal the
Improve button opens is here too: its answer offers the Adopt button."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord.ui import Button, DynamicItem, Modal, TextInput

from assistants import Assistant, Reply
from bot.discord.actors import actor_of, bot_of
from bot.discord.modals import DISCORD_FIELD_LIMIT, LONG, MODAL_TIMEOUT
from bot.discord.replies import guard, say


class RateButton(DynamicItem[Button], template=r"fewtune:rate:(?P<vote>up|down):(?P<id>\d+)"):
    """👍 / 👎 under an answer."""

    def __init__(self, vote: str, message_id: int) -> None:
        emoji = "👍" if vote == "up" else "👎"
        super().__init__(
            Button(
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"fewtune:rate:{vote}:{message_id}",
            )
        )
        self.vote, self.message_id = vote, message_id

    @classmethod
    async def from_custom_id(cls, interaction: Any, item: Any, match: re.Match[str]) -> RateButton:
        return cls(match["vote"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            rating = 1 if self.vote == "up" else -1
            core = bot_of(interaction).core
            await core.api.rate(actor_of(interaction), self.message_id, rating)
            await say(interaction, f"Thanks, noted {'👍' if rating > 0 else '👎'}.")


class ImproveButton(DynamicItem[Button], template=r"fewtune:improve:(?P<id>\d+)"):
    """ "Improve": a modal for a better answer, stored as a correction."""

    def __init__(self, message_id: int) -> None:
        super().__init__(
            Button(
                label="Improve",
                style=discord.ButtonStyle.primary,
                custom_id=f"fewtune:improve:{message_id}",
            )
        )
        self.message_id = message_id

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> ImproveButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(ImproveModal(self.message_id))


class ImproveModal(Modal, title="Improve this answer"):
    """A better answer to a reply, stored as a correction."""

    better: TextInput = TextInput(
        label="A better answer", style=LONG, max_length=DISCORD_FIELD_LIMIT
    )

    def __init__(self, message_id: int) -> None:
        super().__init__(timeout=MODAL_TIMEOUT)
        self.message_id = message_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        core = bot_of(interaction).core
        async with guard(interaction):
            feedback = await core.api.improve(
                actor_of(interaction), self.message_id, self.better.value
            )
            await say(
                interaction,
                "Saved as a correction. The assistant's owner can turn it into an example, here or "
                "later with `/example corrections`:",
                view=view_of(AdoptButton(feedback.id)),
            )


class AdoptButton(DynamicItem[Button], template=r"fewtune:adopt:(?P<id>\d+)"):
    """Turn a correction into an example (the owner, or Manage Server)."""

    def __init__(self, feedback_id: int, label: str = "Add as example") -> None:
        super().__init__(
            Button(
                label=label,
                style=discord.ButtonStyle.success,
                custom_id=f"fewtune:adopt:{feedback_id}",
            )
        )
        self.feedback_id = feedback_id

    @classmethod
    async def from_custom_id(cls, interaction: Any, item: Any, match: re.Match[str]) -> AdoptButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            core = bot_of(interaction).core
            example = await core.api.adopt_correction(actor_of(interaction), self.feedback_id)
            await say(interaction, f"Added as example #{example.id}.")


class StarterButton(DynamicItem[Button], template=r"fewtune:start:(?P<id>\d+):(?P<i>\d)"):
    """A conversation starter of an assistant: starts a chat with that text."""

    def __init__(self, assistant_id: int, index: int, label: str = "…") -> None:
        super().__init__(
            Button(
                label=label[:80],
                style=discord.ButtonStyle.secondary,
                custom_id=f"fewtune:start:{assistant_id}:{index}",
            )
        )
        self.assistant_id, self.index = assistant_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> StarterButton:
        return cls(int(match["id"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = bot_of(interaction)
        async with guard(interaction):
            assistant = await bot.core.api.assistant_by_id(self.assistant_id)
            if self.index >= len(assistant.starters):
                await say(interaction, "That conversation starter has been removed.")
                return
            await bot.chatter.answer_interaction(
                interaction, assistant.name, assistant.starters[self.index]
            )


class DeleteButton(DynamicItem[Button], template=r"fewtune:delete:(?P<id>\d+)"):
    """Confirms `/assistant delete`."""

    def __init__(self, assistant_id: int) -> None:
        super().__init__(
            Button(
                label="Delete",
                style=discord.ButtonStyle.danger,
                custom_id=f"fewtune:delete:{assistant_id}",
            )
        )
        self.assistant_id = assistant_id

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> DeleteButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        core = bot_of(interaction).core
        async with guard(interaction):
            assistant = await core.api.assistant_by_id(self.assistant_id)
            await core.api.delete_assistant(actor_of(interaction), assistant.name)
            await interaction.response.edit_message(
                content=f"Deleted {assistant.name!r}, its examples and conversations.", view=None
            )


class KeepButton(DynamicItem[Button], template=r"fewtune:keep"):
    """Cancels `/assistant delete`."""

    def __init__(self) -> None:
        super().__init__(
            Button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id="fewtune:keep")
        )

    @classmethod
    async def from_custom_id(cls, interaction: Any, item: Any, match: re.Match[str]) -> KeepButton:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


class PromoteButton(DynamicItem[Button], template=r"fewtune:promote:(?P<id>\d+):(?P<force>[01])"):
    """Confirms `/assistant promote`: starts the job and follows it in one message."""

    def __init__(self, assistant_id: int, force: bool = False) -> None:
        super().__init__(
            Button(
                label="Promote",
                style=discord.ButtonStyle.success,
                custom_id=f"fewtune:promote:{assistant_id}:{int(force)}",
            )
        )
        self.assistant_id, self.force = assistant_id, force

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> PromoteButton:
        return cls(int(match["id"]), match["force"] == "1")

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await bot_of(interaction).promoter.begin(interaction, self.assistant_id, self.force)


class NoPromoteButton(DynamicItem[Button], template=r"fewtune:no-promote"):
    """Cancels `/assistant promote` before it starts."""

    def __init__(self) -> None:
        super().__init__(
            Button(
                label="Cancel", style=discord.ButtonStyle.secondary, custom_id="fewtune:no-promote"
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> NoPromoteButton:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content="Nothing was promoted.", view=None)


class CancelPromotionButton(DynamicItem[Button], template=r"fewtune:cancel-promotion:(?P<id>\d+)"):
    """On a promotion's progress message: cancels the running job (or its evaluation)."""

    def __init__(self, assistant_id: int) -> None:
        super().__init__(
            Button(
                label="Cancel",
                style=discord.ButtonStyle.danger,
                custom_id=f"fewtune:cancel-promotion:{assistant_id}",
            )
        )
        self.assistant_id = assistant_id

    @classmethod
    async def from_custom_id(
        cls, interaction: Any, item: Any, match: re.Match[str]
    ) -> CancelPromotionButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guard(interaction):
            await bot_of(interaction).promoter.cancel(interaction, self.assistant_id)


ITEMS = (
    RateButton,
    ImproveButton,
    AdoptButton,
    StarterButton,
    DeleteButton,
    KeepButton,
    PromoteButton,
    NoPromoteButton,
    CancelPromotionButton,
)


def view_of(*items: discord.ui.Item) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def feedback_view(reply: Reply) -> discord.ui.View:
    return view_of(
        RateButton("up", reply.message_id),
        RateButton("down", reply.message_id),
        ImproveButton(reply.message_id),
    )


def starters_view(assistant: Assistant) -> discord.ui.View | None:
    if not assistant.starters:
        return None
    return view_of(*(StarterButton(assistant.id, i, s) for i, s in enumerate(assistant.starters)))


def confirm_delete_view(assistant: Assistant) -> discord.ui.View:
    return view_of(DeleteButton(assistant.id), KeepButton())


def confirm_promote_view(assistant: Assistant, force: bool) -> discord.ui.View:
    return view_of(PromoteButton(assistant.id, force), NoPromoteButton())


def cancel_promotion_view(assistant: Assistant) -> discord.ui.View:
    return view_of(CancelPromotionButton(assistant.id))
