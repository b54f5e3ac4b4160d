"""Chat in Discord: which conversation a message continues, and streaming the core's reply.

- `/chat assistant message` (and a starter button) answers as the interaction's response and
  opens a thread on it for the follow-ups; in a thread it goes on there.
- In a thread opened that way, every message is a follow-up.
- Elsewhere in a guild, a message that mentions the bot or replies to it is answered: a reply
  continues the conversation of the message it replies to (a reply chain is one conversation),
  otherwise the channel's (or the thread's parent's) bound assistant starts a new one.
- In DMs the user's last-used assistant answers, continuing the DM's latest conversation with it.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import discord
from discord.utils import MISSING

from assistants import Actor, Conversation, FewtuneError, ProviderError, Reply
from assistants.chat import ConversationRef
from bot.discord.actors import actor_of, actor_of_message
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


def slow_down(seconds: float) -> str:
    return f"You are sending messages quickly; try again in {max(1, round(seconds))} seconds."


class Chatter:
    """Runs one message through the core and shows the reply as it streams."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core

    async def _stream(
        self,
        actor: Actor,
        conversation: ConversationRef,
        text: str,
        live: LiveReply,
        external_id: str,
    ) -> Reply | None:
        """Run the message through the core into `live`; None when the provider failed (said
        in the channel). A FewtuneError before anything is shown is the caller's to say."""
        from bot.discord.items import feedback_view

        try:
            reply = await self.core.chat.reply(
                actor, conversation, text, on_delta=live.update, external_id=external_id
            )
        except ProviderError as exc:
            # Shown in the channel: everyone waiting sees why; the user's message is stored.
            partial = "".join(m.content for m in live.messages if m.content != "…")
            await live.render(f"{partial}\n\n⚠️ {exc}".strip())
            return None
        # Every part of a split reply is linked, so replying to any part continues the chat.
        # The parts already shown are linked before the buttons appear; a reply posted complete
        # is linked just after, and a user quicker than that is found by `_origin`.
        linked = [str(m.id) for m in live.messages]
        if linked:
            await asyncio.to_thread(self.core.chat.link, reply.message_id, linked)
        await live.render(reply.text or "(the model sent an empty reply)", feedback_view(reply))
        added = [str(m.id) for m in live.messages if str(m.id) not in linked]
        if added:
            await asyncio.to_thread(self.core.chat.link, reply.message_id, added)
        return reply

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
        thread = channel if isinstance(channel, discord.Thread) else None
        # Acknowledge before any core work: under a burst the core's threads are busy and a
        # lookup first could miss Discord's 3 s deadline (measured: bench/discord_load.py).
        async with self.bot.pace:
            await interaction.response.defer(thinking=True)
        found: Conversation | None = None

        def conversation() -> Conversation:
            # Run on the core's threads, with the rest of the message's core work.
            nonlocal found
            found = self._conversation_for(actor, name, channel, thread)
            return found

        async def post(content: str, view: discord.ui.View | None) -> discord.Message:
            return await interaction.followup.send(
                content, wait=True, allowed_mentions=NO_MENTIONS, view=view or MISSING
            )

        live = LiveReply(post, self.bot.stream_interval, self.bot.pace)
        try:
            reply = await self._stream(
                actor, conversation, text, live, external_id=f"interaction:{interaction.id}"
            )
        except FewtuneError as exc:
            if live.messages:
                await interaction.followup.send(str(exc), allowed_mentions=NO_MENTIONS)
            else:  # refused before answering: the placeholder goes, the user alone is told
                await withdraw(interaction, str(exc))
            return
        if isinstance(channel, discord.TextChannel) and live.messages and found is not None:
            title = f"{reply.assistant.name if reply else name}: {text}"
            started = await channel.create_thread(
                name=title[:THREAD_NAME_LIMIT], message=live.messages[0]
            )
            await asyncio.to_thread(self.core.chat.set_thread, found.id, str(started.id))

    def _conversation_for(
        self, actor: Actor, name: str, channel: Any, thread: discord.Thread | None
    ) -> Conversation:
        assistant = self.core.assistants.get(actor, name)
        if thread is not None:
            current = self.core.chat.conversation_for_thread(str(thread.id))
            if current is not None and current.assistant_id == assistant.id:
                return current
        # In a DM the channel is kept, so the DM's next plain message continues this chat.
        channel_id = thread.parent_id if thread is not None else getattr(channel, "id", None)
        return self.core.chat.start_for(
            actor,
            assistant.id,
            channel_id=str(channel_id) if channel_id else None,
            thread_id=str(thread.id) if thread else None,
            frontend="discord",
        )

    # -- messages ---------------------------------------------------------------------------

    def _text(self, message: discord.Message) -> str:
        me = self.bot.user
        text = message.content
        if me is not None:
            text = re.sub(rf"<@!?{me.id}>", "", text)
        return text.strip()

    async def answer_message(self, message: discord.Message) -> None:
        """Answer a message if it is addressed to fewtune (see the module docstring)."""
        me = self.bot.user
        if (
            me is None
            or message.author.bot
            or message.type
            not in (
                discord.MessageType.default,
                discord.MessageType.reply,
            )
        ):
            return
        actor = actor_of_message(message)
        found = await asyncio.to_thread(self._conversation_of_message, actor, message)
        if found is None:
            return
        if isinstance(found, str):
            await message.reply(found, allowed_mentions=NO_MENTIONS, mention_author=False)
            return
        text = self._text(message)
        if not text:
            return
        wait = self.bot.limiter.hit(actor.user_id)
        if wait:
            await message.reply(slow_down(wait), allowed_mentions=NO_MENTIONS, mention_author=False)
            return

        async def post(content: str, view: discord.ui.View | None) -> discord.Message:
            return await message.reply(
                content, allowed_mentions=NO_MENTIONS, mention_author=False, view=view or MISSING
            )

        live = LiveReply(post, self.bot.stream_interval, self.bot.pace)
        try:
            await self._stream(actor, found.id, text, live, external_id=str(message.id))
        except FewtuneError as exc:
            await message.reply(str(exc), allowed_mentions=NO_MENTIONS, mention_author=False)

    def _conversation_of_message(
        self, actor: Actor, message: discord.Message
    ) -> Conversation | str | None:
        """The conversation the message continues or starts; a sentence when none can answer;
        None when the message is not for fewtune."""
        me = self.bot.user
        assert me is not None
        chat = self.core.chat
        reference = message.reference.message_id if message.reference else None
        if reference is not None:
            continued = chat.conversation_for_message(str(reference)) or self._origin(message)
            if continued is not None:
                return continued
        if message.guild is None:
            return self._dm_conversation(actor, message)
        channel = message.channel
        if isinstance(channel, discord.Thread):
            # A thread started from an answer has the answer's id: that finds the conversation
            # even before the thread's id is stored (a user may write as soon as it appears).
            in_thread = chat.conversation_for_thread(
                str(channel.id)
            ) or chat.conversation_for_message(str(channel.id))
            if in_thread is not None:
                return in_thread
        addressed = me in message.mentions
        if not addressed:
            return None
        bound = chat.bound(str(channel.id))
        if bound is None and isinstance(channel, discord.Thread) and channel.parent_id:
            bound = chat.bound(str(channel.parent_id))
        if bound is None:
            return NO_ASSISTANT_HERE
        thread_id = str(channel.id) if isinstance(channel, discord.Thread) else None
        try:
            return chat.start_for(
                actor,
                bound.id,
                channel_id=str(channel.id),
                thread_id=thread_id,
                frontend="discord",
            )
        except FewtuneError as exc:
            return str(exc)

    def _origin(self, message: discord.Message) -> Conversation | None:
        """The conversation of a reply to an answer whose id is not linked yet (a short answer
        is posted complete, buttons and all, and linked right after): found through what the
        answer itself answered, a user's message or a /chat interaction, stored before it."""
        chat = self.core.chat
        answer = message.reference.resolved if message.reference else None
        if not isinstance(answer, discord.Message) or answer.author != self.bot.user:
            return None
        if answer.reference and answer.reference.message_id:
            found = chat.conversation_for_message(str(answer.reference.message_id))
            if found is not None:
                return found
        if answer.interaction_metadata is not None:
            return chat.conversation_for_message(f"interaction:{answer.interaction_metadata.id}")
        return None

    def _dm_conversation(self, actor: Actor, message: discord.Message) -> Conversation | str:
        """The DM's latest conversation with the user's last-used assistant (kept in SQLite, so
        a restart continues it), or a new one."""
        chat = self.core.chat
        last = chat.last_assistant(actor)
        if last is None:
            return NO_ASSISTANT_IN_DM
        channel_id = str(message.channel.id)
        current = chat.conversation_for_channel(channel_id, last.id, actor.user_id)
        if current is not None:
            return current
        return chat.start_for(actor, last.id, channel_id=channel_id, frontend="discord")
