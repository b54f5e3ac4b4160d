"""Chat in Discord: where a message came from (an Origin for the core), and showing the core's
reply as it streams. Which conversation a message continues is the core's rule
(`Chat.resolve`); here only what Discord shows:

- `/chat assistant message` (and a starter button) answers as the interaction's response and
  opens a thread on it for the follow-ups; in a thread it goes on there.
- Elsewhere the core answers messages that mention the bot, reply to it, follow up in one of
  its threads, or come in a DM; the bot replies to them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord.utils import MISSING

from assistants import FewtuneError, NoAssistant, Origin, Reply, sources_line
from assistants.ratelimit import slow_down
from bot.discord.actors import actor_of, actor_of_message
from bot.discord.items import feedback_view
from bot.discord.replies import NO_MENTIONS, say, withdraw
from bot.discord.stream import LiveReply

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot

THREAD_NAME_LIMIT = 100
NO_ASSISTANT_HERE = (
    "No assistant answers in this channel: use `/chat`, or `/assistant use` to bind one here."
)
NO_ASSISTANT_IN_DM = (
    "Pick an assistant first with `/chat assistant message`; after that, just talk to me here."
)


def where(channel: Any) -> dict[str, Any]:
    """The Origin fields of a channel: its id, and for a thread its id and parent's."""
    thread = channel if isinstance(channel, discord.Thread) else None
    channel_id = getattr(channel, "id", None)
    return {
        "channel_id": str(channel_id) if channel_id else None,
        "thread_id": str(thread.id) if thread is not None else None,
        "parent_id": str(thread.parent_id) if thread is not None and thread.parent_id else None,
    }


class Chatter:
    """Hands one message to the core and shows the reply as it streams."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core

    async def _show(self, live: LiveReply, reply: Reply) -> list[str]:
        """Show the finished reply (a provider failure in the channel, where everyone waiting
        sees why); the ids of every message it is shown in."""
        if reply.error is not None:
            # What came before the failure is the reply's text, not what is shown: that may
            # still be the placeholder's note.
            await live.render(f"{reply.text}\n\n⚠️ {reply.error}".strip())
        else:
            text = reply.text or "(the model sent an empty reply)"
            if reply.sources:  # citations for everyone who sees the answer; never chunk texts
                text += "\n\n-# " + sources_line(reply.sources)
            await live.render(text, feedback_view(reply))
        return [str(m.id) for m in live.messages]

    # -- interactions -----------------------------------------------------------------------

    async def answer_interaction(
        self, interaction: discord.Interaction, name: str, text: str
    ) -> None:
        """Answer `text` with the assistant `name` as the interaction's (public) response."""
        actor = actor_of(interaction)
        wait = self.bot.limiter.hit(actor.user_id)
        if wait:
            await say(interaction, slow_down(wait))
            return
        channel = interaction.channel
        # Acknowledge before any core work: under a burst the core's threads are busy and a
        # lookup first could miss Discord's 3 s deadline (measured: bench/discord_load.py).
        async with self.bot.pace:
            await interaction.response.defer(thinking=True)

        async def post(content: str, view: discord.ui.View | None) -> discord.Message:
            return await interaction.followup.send(
                content, wait=True, allowed_mentions=NO_MENTIONS, view=view or MISSING
            )

        live = LiveReply(post, self.bot.stream_interval, self.bot.pace)
        origin = Origin(
            frontend="discord",
            assistant=name,
            external_id=f"interaction:{interaction.id}",
            **where(channel),
        )
        try:
            reply = await self.core.chat.answer(
                actor, origin, text, on_delta=live.update, on_wait=live.note
            )
        except FewtuneError as exc:  # refused before answering: the placeholder goes
            await withdraw(interaction, str(exc))
            return
        assert reply is not None  # a named assistant always answers
        posted = await self._show(live, reply)
        thread_id = None
        if isinstance(channel, discord.TextChannel) and live.messages:
            title = f"{reply.assistant.name}: {text}"
            started = await channel.create_thread(
                name=title[:THREAD_NAME_LIMIT], message=live.messages[0]
            )
            thread_id = str(started.id)
        await self.core.chat.posted(reply, posted, thread_id=thread_id)

    # -- messages ---------------------------------------------------------------------------

    async def answer_message(self, message: discord.Message) -> None:
        """Answer a message if the core finds it addressed to fewtune."""
        me = self.bot.user
        if (
            me is None
            or message.author.bot
            or message.type not in (discord.MessageType.default, discord.MessageType.reply)
        ):
            return

        async def post(content: str, view: discord.ui.View | None) -> discord.Message:
            return await message.reply(
                content, allowed_mentions=NO_MENTIONS, mention_author=False, view=view or MISSING
            )

        live = LiveReply(post, self.bot.stream_interval, self.bot.pace)
        try:
            reply = await self.core.chat.answer(
                actor_of_message(message),
                self._origin(message, me),
                re.sub(rf"<@!?{me.id}>", "", message.content).strip(),
                on_delta=live.update,
                on_wait=live.note,
                limiter=self.bot.limiter,
            )
        except NoAssistant as exc:
            said = NO_ASSISTANT_IN_DM if exc.dm else NO_ASSISTANT_HERE
            await message.reply(said, allowed_mentions=NO_MENTIONS, mention_author=False)
            return
        except FewtuneError as exc:
            await message.reply(str(exc), allowed_mentions=NO_MENTIONS, mention_author=False)
            return
        if reply is not None:
            await self.core.chat.posted(reply, await self._show(live, reply))

    def _origin(self, message: discord.Message, me: discord.ClientUser) -> Origin:
        reference = message.reference.message_id if message.reference else None
        return Origin(
            frontend="discord",
            dm=message.guild is None,
            addressed=me in message.mentions,
            replies_to=str(reference) if reference else None,
            answer_to=self._answer_to(message, me),
            external_id=str(message.id),
            **where(message.channel),
        )

    @staticmethod
    def _answer_to(message: discord.Message, me: discord.ClientUser) -> str | None:
        """When the message replies to one of fewtune's answers: what that answer answered, a
        user's message or a /chat interaction (an answer is linked only once posted)."""
        answer = message.reference.resolved if message.reference else None
        if not isinstance(answer, discord.Message) or answer.author != me:
            return None
        if answer.reference and answer.reference.message_id:
            return str(answer.reference.message_id)
        if answer.interaction_metadata is not None:
            return f"interaction:{answer.interaction_metadata.id}"
        return None
