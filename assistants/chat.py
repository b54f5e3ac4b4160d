"""One message's way through the core: store it, embed it, select examples, build the prompt,
stream the reply from the assistant's model, store the reply with what produced it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistant, Assistants, is_visible, now
from assistants.errors import InvalidInput, NotFound, PermissionDenied, ProviderError
from assistants.examples import Example, Examples
from assistants.prompt import PromptTooLong, build_prompt
from assistants.providers import ModelRef, Providers
from assistants.selection import NEEDS_QUERY, select
from storage.db import insert_row
from storage.index import ExampleIndex
from storage.settings import Settings

MAX_MESSAGE = 16_000  # characters of one user message


@dataclass
class Conversation:
    id: int
    assistant_id: int
    user_id: str
    guild_id: str | None
    channel_id: str | None
    thread_id: str | None
    frontend: str
    seed: int
    created_at: str


@dataclass
class Reply:
    text: str
    model: str
    examples: list[Example]
    message_id: int
    user_message_id: int
    conversation_id: int
    assistant: Assistant
    scores: list[float | None] = field(default_factory=list)
    trimmed: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float = 0.0
    overhead_ms: float = 0.0  # the core's own time: store, embed, select, build, record


@dataclass
class Composed:
    """A prompt ready for the model, with the examples in it and what the budget trimmed."""

    messages: list[dict[str, str]]
    examples: list[Example]
    scores: list[float | None]
    trimmed: dict[str, int]


@dataclass
class Prepared:
    """Everything decided before the model is called."""

    assistant: Assistant
    conversation: Conversation
    user_message_id: int
    messages: list[dict[str, str]]
    examples: list[Example]
    scores: list[float | None]
    trimmed: dict[str, int]


OnDelta = Callable[[str], Awaitable[None]]
ConversationRef = int | Callable[[], Conversation]  # an id, or a function finding or starting one


class Chat:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        assistants: Assistants,
        examples: Examples,
        index: Callable[[], ExampleIndex],
        providers: Providers,
        lock: threading.RLock,
        executor: Executor | None = None,
    ) -> None:
        self.executor = executor
        self.db = db
        self.settings = settings
        self.assistants = assistants
        self.examples = examples
        self._index = index
        self.providers = providers
        self.lock = lock

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking core work (SQLite, embedding, the index) on the core's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- conversations -------------------------------------------------------------------------

    def start(
        self,
        actor: Actor,
        name: str,
        *,
        channel_id: str | None = None,
        thread_id: str | None = None,
        frontend: str = "cli",
    ) -> Conversation:
        assistant = self.assistants.get(actor, name)
        return self._start(actor, assistant, channel_id, thread_id, frontend)

    def start_for(
        self,
        actor: Actor,
        assistant_id: int,
        *,
        channel_id: str | None = None,
        thread_id: str | None = None,
        frontend: str = "cli",
    ) -> Conversation:
        """Start a conversation with an assistant known by id (e.g. a channel's bound one)."""
        assistant = self.assistants.by_id(assistant_id)
        if not is_visible(actor, assistant):
            raise NotFound("That assistant is not available here.")
        return self._start(actor, assistant, channel_id, thread_id, frontend)

    def _start(
        self,
        actor: Actor,
        assistant: Assistant,
        channel_id: str | None,
        thread_id: str | None,
        frontend: str,
    ) -> Conversation:
        row = {
            "assistant_id": assistant.id,
            "user_id": actor.user_id,
            "guild_id": actor.guild_id,
            "channel_id": channel_id,
            "thread_id": thread_id,
            "frontend": frontend,
            "seed": random.randrange(2**31),
            "created_at": now(),
        }
        with self.lock, self.db.conn:
            conversation_id = insert_row(self.db, "conversations", row)
        return self.conversation(conversation_id)

    def conversation(self, conversation_id: int) -> Conversation:
        rows = list(self.db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
        if not rows:
            raise NotFound(f"Conversation #{conversation_id} no longer exists.")
        return Conversation(**rows[0])

    def conversation_for_thread(self, thread_id: str) -> Conversation | None:
        rows = list(
            self.db.query(
                "SELECT * FROM conversations WHERE thread_id = ? ORDER BY id DESC LIMIT 1",
                [thread_id],
            )
        )
        return Conversation(**rows[0]) if rows else None

    def conversation_for_message(self, external_id: str) -> Conversation | None:
        """The conversation a frontend message (e.g. a Discord message id) belongs to."""
        rows = list(
            self.db.query(
                "SELECT c.* FROM conversations c JOIN messages m ON m.conversation_id = c.id "
                "JOIN external_ids x ON x.message_id = m.id WHERE x.external_id = ?",
                [str(external_id)],
            )
        )
        return Conversation(**rows[0]) if rows else None

    def conversation_for_channel(
        self, channel_id: str, assistant_id: int, user_id: str | None = None
    ) -> Conversation | None:
        """The latest conversation with an assistant in a channel (for DMs: of that user)."""
        rows = list(
            self.db.query(
                "SELECT * FROM conversations WHERE channel_id = ? AND assistant_id = ? "
                "AND (? IS NULL OR user_id = ?) ORDER BY id DESC LIMIT 1",
                [str(channel_id), assistant_id, user_id, user_id],
            )
        )
        return Conversation(**rows[0]) if rows else None

    def set_thread(self, conversation_id: int, thread_id: str) -> None:
        with self.lock, self.db.conn:
            self.db.execute(
                "UPDATE conversations SET thread_id = ? WHERE id = ?", [thread_id, conversation_id]
            )

    def link(self, message_id: int, external_ids: list[str]) -> None:
        """Link frontend messages to a stored one (a reply split in parts: each part), at once."""
        with self.lock, self.db.conn:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO external_ids (external_id, message_id) VALUES (?, ?)",
                [(str(external_id), message_id) for external_id in external_ids],
            )

    def _drop_if_empty(self, conversation_id: int) -> None:
        with self.lock, self.db.conn:
            self.db.execute(
                "DELETE FROM conversations WHERE id = ? "
                "AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?)",
                [conversation_id, conversation_id],
            )

    def history(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation's stored messages, oldest first."""
        return list(
            self.db.query(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
            )
        )

    # -- bindings and preferences --------------------------------------------------------------

    def bind(self, actor: Actor, channel_id: str, name: str | None) -> Assistant | None:
        """Bind a channel or thread to an assistant (None unbinds). In a guild a channel is the
        guild's to configure, so it needs Manage Server; a DM channel is the user's own."""
        if actor.guild_id and not actor.can_manage_guild:
            raise PermissionDenied("Binding a channel to an assistant needs Manage Server.")
        with self.lock, self.db.conn:
            if name is None or name.strip().lower() == "none":
                self.db.execute("DELETE FROM bindings WHERE channel_id = ?", [str(channel_id)])
                return None
            assistant = self.assistants.get(actor, name)
            self.db.table("bindings").upsert(
                {
                    "channel_id": str(channel_id),
                    "assistant_id": assistant.id,
                    "guild_id": actor.guild_id,
                    "bound_by": actor.user_id,
                    "created_at": now(),
                },
                pk="channel_id",
            )
            return assistant

    def bound(self, channel_id: str) -> Assistant | None:
        row = self.db.execute(
            "SELECT assistant_id FROM bindings WHERE channel_id = ?", [str(channel_id)]
        ).fetchone()
        return self.assistants.by_id(row[0]) if row else None

    def last_assistant(self, actor: Actor) -> Assistant | None:
        row = self.db.execute(
            "SELECT last_assistant_id FROM user_preferences WHERE user_id = ?", [actor.user_id]
        ).fetchone()
        if not row or row[0] is None:
            return None
        try:
            assistant = self.assistants.by_id(row[0])
        except NotFound:
            return None
        return assistant if is_visible(actor, assistant) else None

    def _remember(self, user_id: str, assistant_id: int) -> None:
        self.db.execute(
            "INSERT INTO user_preferences (user_id, last_assistant_id, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(user_id) DO UPDATE SET last_assistant_id = excluded.last_assistant_id, "
            "updated_at = excluded.updated_at",
            [user_id, assistant_id, now()],
        )

    # -- one message ---------------------------------------------------------------------------

    def prepare(
        self, actor: Actor, conversation: ConversationRef, text: str, external_id: str | None = None
    ) -> Prepared:
        """Store the user's message and build the prompt (synchronous; runs in a thread)."""
        text = text.strip()
        if not text:
            raise InvalidInput("The message is empty.")
        if len(text) > MAX_MESSAGE:
            raise InvalidInput(
                f"The message is {len(text):,} characters; the limit is {MAX_MESSAGE:,}."
            )
        found = self.conversation(conversation) if isinstance(conversation, int) else conversation()
        conversation_id = found.id
        assistant = self.assistants.by_id(found.assistant_id)
        if not is_visible(actor, assistant):
            raise NotFound("That assistant is not available here.")
        history = [
            {"role": m["role"], "content": m["content"]}
            for m in self.history(conversation_id)
            if m["status"] == "ok"
        ]
        try:
            composed = self.compose(assistant, history, text, seed=found.seed)
        except InvalidInput:
            if not isinstance(conversation, int) and not history:
                self._drop_if_empty(conversation_id)  # started for this message: nothing stays
            raise
        # Stored only once the prompt is known to fit, so a refused message leaves nothing behind.
        with self.lock, self.db.conn:
            user_message_id = insert_row(
                self.db,
                "messages",
                {
                    "conversation_id": conversation_id,
                    "role": "user",
                    "user_id": actor.user_id,
                    "content": text,
                    "created_at": now(),
                },
            )
            if external_id:
                self.db.execute(
                    "INSERT OR REPLACE INTO external_ids (external_id, message_id) VALUES (?, ?)",
                    [str(external_id), user_message_id],
                )
            self._remember(actor.user_id, assistant.id)
        return Prepared(
            assistant=assistant,
            conversation=found,
            user_message_id=user_message_id,
            messages=composed.messages,
            examples=composed.examples,
            scores=composed.scores,
            trimmed=composed.trimmed,
        )

    def compose(
        self,
        assistant: Assistant,
        history: list[dict[str, str]],
        text: str,
        *,
        seed: int = 0,
        k: int | None = None,
        exclude: frozenset[int] = frozenset(),
    ) -> Composed:
        """Select examples and build the prompt for one message; stores nothing. `k` overrides
        the assistant's (evaluation compares with and without examples)."""
        k = assistant.k if k is None else k
        selected_ids: list[int] = []
        scores: list[float | None] = []
        if k > 0:
            index = self._index()
            query = None
            all_ids = None
            if assistant.selector in NEEDS_QUERY:
                query = index.embedder.embed_one(text)
            else:
                all_ids = self.examples.all_ids(assistant.id)
            chosen = select(
                assistant.selector,
                index,
                assistant.id,
                k,
                query,
                all_ids,
                seed=seed,
                exclude=exclude,
                text=text,
                inputs=functools.partial(self.examples.inputs, assistant.id),
            )
            selected_ids, scores = chosen.ids, chosen.scores
        examples = self.examples.by_ids(assistant.id, selected_ids)
        score_of = dict(zip(selected_ids, scores, strict=True))
        reply_tokens = assistant.max_tokens or self.settings.chat.reply_tokens
        budget = self.settings.chat.context_tokens - reply_tokens
        try:
            prompt = build_prompt(
                assistant.instructions,
                [(e.id, e.as_messages()) for e in examples],
                history,
                text,
                budget,
            )
        except PromptTooLong as exc:
            raise InvalidInput(
                f"The message and instructions need about {exc.needed:,} tokens, more than this "
                f"assistant's budget of {exc.budget:,}; send a shorter message."
            ) from exc
        kept = {i: e for i, e in ((e.id, e) for e in examples) if i in prompt.example_ids}
        return Composed(
            messages=prompt.messages,
            examples=[kept[i] for i in prompt.example_ids],
            scores=[score_of.get(i) for i in prompt.example_ids],
            trimmed=prompt.trimmed,
        )

    def record(self, prepared: Prepared, actor: Actor, fields: dict[str, Any]) -> int:
        """Store the reply (or the failure) with the examples used, model and figures."""
        row = {
            "conversation_id": prepared.conversation.id,
            "role": "assistant",
            "user_id": actor.user_id,  # whom it answered: `privacy forget` removes it with theirs
            "examples_used": json.dumps(
                [
                    {"id": e.id, "score": s}
                    for e, s in zip(prepared.examples, prepared.scores, strict=True)
                ]
            ),
            "trimmed": json.dumps(prepared.trimmed) if prepared.trimmed else None,
            "created_at": now(),
            **fields,
        }
        with self.lock, self.db.conn:
            return insert_row(self.db, "messages", row)

    async def reply(
        self,
        actor: Actor,
        conversation: ConversationRef,
        text: str,
        *,
        on_delta: OnDelta | None = None,
        external_id: str | None = None,
    ) -> Reply:
        """Answer a message in a conversation, streaming through on_delta(text so far).

        `conversation` is its id, or a function that finds or starts it: a frontend with rules
        of its own (Discord's threads and channels) has it run on the core's threads with the
        rest of the message's work, one trip instead of two (under a burst of messages each
        trip queued for a thread: bench/discord_load.py)."""
        started = time.perf_counter()
        prepared = await self._in_thread(self.prepare, actor, conversation, text, external_id)
        overhead = time.perf_counter() - started
        assistant = prepared.assistant
        model = ModelRef.parse(assistant.active_model)
        reply_tokens = assistant.max_tokens or self.settings.chat.reply_tokens
        parts: list[str] = []
        usage: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None}
        model_started = time.perf_counter()
        try:
            async for chunk in self.providers.stream_chat(
                model, prepared.messages, assistant.temperature, reply_tokens
            ):
                if chunk.prompt_tokens is not None:
                    usage = {
                        "prompt_tokens": chunk.prompt_tokens,
                        "completion_tokens": chunk.completion_tokens,
                    }
                if chunk.text:
                    parts.append(chunk.text)
                    if on_delta is not None:
                        await on_delta("".join(parts))
        except ProviderError as exc:
            await self._in_thread(
                self.record,
                prepared,
                actor,
                {
                    "content": "".join(parts),
                    "status": "error",
                    "error": str(exc),
                    "model": str(model),
                },
            )
            raise
        latency = (time.perf_counter() - model_started) * 1000
        reply_text = "".join(parts).strip()
        record_started = time.perf_counter()
        message_id = await self._in_thread(
            self.record,
            prepared,
            actor,
            {"content": reply_text, "model": str(model), "latency_ms": latency, **usage},
        )
        overhead += time.perf_counter() - record_started
        return Reply(
            text=reply_text,
            model=str(model),
            examples=prepared.examples,
            scores=prepared.scores,
            message_id=message_id,
            user_message_id=prepared.user_message_id,
            conversation_id=prepared.conversation.id,
            assistant=assistant,
            trimmed=prepared.trimmed,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            latency_ms=latency,
            overhead_ms=overhead * 1000,
        )

    async def ask(self, actor: Actor, name: str, text: str, **kwargs: Any) -> Reply:
        """One message in a new conversation."""
        start = functools.partial(self.start, frontend=kwargs.pop("frontend", "cli"))
        conversation = await self._in_thread(start, actor, name)
        return await self.reply(actor, conversation.id, text, **kwargs)
