"""One message's way through the core: find which conversation it continues (from its Origin),
store it, embed it, select examples, build the prompt, stream the reply from the assistant's
model, store the reply with what produced it; then link what the frontend posted.
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
from assistants.errors import (
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    ProviderError,
)
from assistants.examples import Example, Examples
from assistants.knowledge.context import Source, knowledge_for
from assistants.knowledge.held import HeldKnowledge
from assistants.origin import NoAssistant, Origin
from assistants.prompt import PromptTooLong, build_prompt, last_turns
from assistants.providers import ModelRef, Providers
from assistants.ratelimit import UserRateLimiter, slow_down
from assistants.selection import NEEDS_QUERY, select
from assistants.text import check_text
from storage.db import insert_row
from storage.held import HeldExamples
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
    error: str | None = None  # the provider failed: its sentence; `text` is what came before
    sources: list[Source] = field(default_factory=list)  # knowledge in the prompt, [1] first


@dataclass
class Composed:
    """A prompt ready for the model, with the examples in it and what the budget trimmed."""

    messages: list[dict[str, str]]
    examples: list[Example]
    scores: list[float | None]
    trimmed: dict[str, int]
    sources: list[Source] = field(default_factory=list)


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
    sources: list[Source] = field(default_factory=list)


@dataclass(frozen=True)
class Opening:
    """A conversation to start for a message, once the message is accepted."""

    assistant: Assistant
    channel_id: str | None
    thread_id: str | None
    frontend: str


OnDelta = Callable[[str], Awaitable[None]]


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
        knowledge: HeldKnowledge | None = None,
        held_examples: HeldExamples | None = None,
    ) -> None:
        self.executor = executor
        self.knowledge = knowledge
        self.held_examples = held_examples  # exact search in memory, else the index's query
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

    async def posted(
        self, reply: Reply, message_ids: list[str], *, thread_id: str | None = None
    ) -> None:
        """Link what the frontend posted for a reply, in one trip: every part of it (so replying
        to any part continues the conversation) and the thread it opened on it, if any."""
        await self._in_thread(self._posted, reply, message_ids, thread_id)

    def _posted(self, reply: Reply, message_ids: list[str], thread_id: str | None) -> None:
        with self.lock, self.db.conn:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO external_ids (external_id, message_id) VALUES (?, ?)",
                [(str(external_id), reply.message_id) for external_id in message_ids],
            )
            if thread_id is not None:
                self.db.execute(
                    "UPDATE conversations SET thread_id = ? WHERE id = ?",
                    [thread_id, reply.conversation_id],
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

    # -- which conversation ---------------------------------------------------------------------

    def resolve(self, actor: Actor, origin: Origin) -> Conversation | Opening | None:
        """The conversation a message continues, or the one it opens; None when it is not for
        fewtune. The rules, in order:

        1. A conversation named by id (the terminal's chat) goes on.
        2. An assistant named by the user (`/chat NAME`) answers: in a thread, continuing the
           thread's conversation when it is with that assistant, else in a new one.
        3. A reply continues the conversation of the message it replies to (a reply chain is
           one conversation), found also through what that answer answered.
        4. In a DM the user's last-used assistant answers, continuing the DM's latest
           conversation with it (kept in SQLite, so a restart continues it).
        5. In a thread opened on an answer, every message is a follow-up (found by the answer's
           id too: the thread's own id may not be stored yet).
        6. Anything else must address fewtune; the channel's (or thread's parent's) bound
           assistant then answers in a new conversation.
        """
        if origin.conversation_id is not None:
            return self.conversation(origin.conversation_id)
        if origin.assistant is not None:
            assistant = self.assistants.get(actor, origin.assistant)
            if origin.thread_id is not None:
                current = self.conversation_for_thread(origin.thread_id)
                if current is not None and current.assistant_id == assistant.id:
                    return current
            # In a DM the channel is kept, so the DM's next plain message continues this chat.
            channel_id = origin.parent_id if origin.thread_id is not None else origin.channel_id
            return Opening(assistant, channel_id, origin.thread_id, origin.frontend)
        if origin.replies_to is not None:
            continued = self.conversation_for_message(origin.replies_to)
            if continued is None and origin.answer_to is not None:
                continued = self.conversation_for_message(origin.answer_to)
            if continued is not None:
                return continued
        if origin.dm:
            return self._in_dm(actor, origin)
        if origin.thread_id is not None:
            in_thread = self.conversation_for_thread(
                origin.thread_id
            ) or self.conversation_for_message(origin.thread_id)
            if in_thread is not None:
                return in_thread
        if not origin.addressed:
            return None
        bound = self.bound(origin.channel_id) if origin.channel_id else None
        if bound is None and origin.parent_id is not None:
            bound = self.bound(origin.parent_id)
        if bound is None:
            raise NoAssistant(dm=False)
        if not is_visible(actor, bound):
            raise NotFound("That assistant is not available here.")
        return Opening(bound, origin.channel_id, origin.thread_id, origin.frontend)

    def _in_dm(self, actor: Actor, origin: Origin) -> Conversation | Opening:
        last = self.last_assistant(actor)
        if last is None:
            raise NoAssistant(dm=True)
        if origin.channel_id is not None:
            current = self.conversation_for_channel(origin.channel_id, last.id, actor.user_id)
            if current is not None:
                return current
        return Opening(last, origin.channel_id, None, origin.frontend)

    # -- one message ---------------------------------------------------------------------------

    def _begin(
        self, actor: Actor, origin: Origin, text: str, limiter: UserRateLimiter | None
    ) -> Prepared | None:
        """Everything before the model, in one trip to the core's threads."""
        found = self.resolve(actor, origin)
        if found is None:
            return None
        if not text.strip() and origin.assistant is None and origin.conversation_id is None:
            return None  # a bare mention: nothing to answer
        wait = limiter.hit(actor.user_id) if limiter is not None else 0.0
        if wait:
            raise LimitExceeded(slow_down(wait))
        return self.prepare(actor, found, text, origin.external_id)

    def prepare(
        self,
        actor: Actor,
        conversation: int | Conversation | Opening,
        text: str,
        external_id: str | None = None,
    ) -> Prepared:
        """Store the user's message and build the prompt (synchronous; runs in a thread).
        An Opening starts its conversation here, and drops it if the message is refused."""
        text = text.strip()
        if not text:
            raise InvalidInput("The message is empty.")
        if len(text) > MAX_MESSAGE:
            raise InvalidInput(
                f"The message is {len(text):,} characters; the limit is {MAX_MESSAGE:,}."
            )
        check_text(text, "The message")
        if isinstance(conversation, int):
            found = self.conversation(conversation)
        elif isinstance(conversation, Opening):
            found = self._start(
                actor,
                conversation.assistant,
                conversation.channel_id,
                conversation.thread_id,
                conversation.frontend,
            )
        else:
            found = conversation
        conversation_id = found.id
        assistant = self.assistants.by_id(found.assistant_id)
        if not is_visible(actor, assistant):
            raise NotFound("That assistant is not available here.")
        history = (
            [
                {"role": m["role"], "content": m["content"]}
                for m in self.history(conversation_id)
                if m["status"] == "ok"
            ]
            if assistant.history != 0  # standing alone, a message needs no read of the past
            else []
        )
        try:
            composed = self.compose(assistant, history, text, seed=found.seed)
        except InvalidInput:
            if isinstance(conversation, Opening):
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
            sources=composed.sources,
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
        chunk_ids: list[int] | None = None,
    ) -> Composed:
        """Select examples and knowledge and build the prompt for one message; stores nothing.
        `k` overrides the assistant's (evaluation compares with and without examples).
        `chunk_ids` are the knowledge a stored reply was answered with, used instead of a search
        (a training chat rebuilt as served). Of `history` only the assistant's last `history`
        exchanges go in, then the budget trims what does not fit."""
        k = assistant.k if k is None else k
        selected_ids: list[int] = []
        scores: list[float | None] = []
        query = None
        if k > 0:
            index = self._index()
            all_ids = None
            if assistant.selector in NEEDS_QUERY:
                query = index.embedder.embed_one(text)
            else:
                all_ids = self.examples.all_ids(assistant.id)
            chosen = select(
                assistant.selector,
                self.held_examples or index,
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
        passages = (
            knowledge_for(
                self.db,
                self.knowledge,
                self.settings.knowledge,
                assistant.id,
                text,
                query=query,
                chunk_ids=chunk_ids,
            )
            if self.knowledge is not None
            else []
        )
        examples = self.examples.by_ids(assistant.id, selected_ids)
        score_of = dict(zip(selected_ids, scores, strict=True))
        reply_tokens = assistant.max_tokens or self.settings.chat.reply_tokens
        budget = self.settings.chat.context_tokens - reply_tokens
        try:
            prompt = build_prompt(
                assistant.instructions,
                [(e.id, e.as_messages()) for e in examples],
                last_turns(history, assistant.history),
                text,
                budget,
                layout=assistant.layout,
                knowledge=[(p.chunk_id, p.label, p.text) for p in passages],
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
            sources=[
                Source.of(n, p)
                for n, p in enumerate(passages[: len(prompt.knowledge_ids)], start=1)
            ],
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
            # As examples_used; NULL only on replies stored before knowledge existed.
            "knowledge_used": json.dumps(
                [{"id": s.chunk_id, "score": s.score} for s in prepared.sources]
            ),
            "created_at": now(),
            **fields,
        }
        with self.lock, self.db.conn:
            return insert_row(self.db, "messages", row)

    async def answer(
        self,
        actor: Actor,
        origin: Origin,
        text: str,
        *,
        on_delta: OnDelta | None = None,
        on_wait: OnDelta | None = None,
        limiter: UserRateLimiter | None = None,
    ) -> Reply | None:
        """Answer a message from `origin`, streaming through on_delta(text so far): find its
        conversation (`resolve`), store it, build the prompt, call the model, store the reply.
        None when the message is not for fewtune. A provider failure is stored and returned
        as the reply's `error` (the frontend shows it where everyone waiting sees it); any
        other refusal raises its FewtuneError before anything is streamed. `limiter`, the
        frontend's per-user limit, is hit only once the message is known to be answered.
        `on_wait(sentence)` is called first when the reply will wait for the local model server
        to start (a frontend shows it where the reply will be).

        The work before the model runs in one trip to the core's threads: under a burst of
        messages each trip queues for a thread (bench/discord_load.py)."""
        started = time.perf_counter()
        prepared = await self._in_thread(self._begin, actor, origin, text, limiter)
        if prepared is None:
            return None
        overhead = time.perf_counter() - started
        assistant = prepared.assistant
        model = ModelRef.parse(assistant.active_model)
        reply_tokens = assistant.max_tokens or self.settings.chat.reply_tokens
        parts: list[str] = []
        usage: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None}
        model_started = time.perf_counter()
        if on_wait is not None:
            note = await self.providers.wait_note(model)
            if note is not None:
                await on_wait(note)
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
            error: str | None = str(exc)
            fields: dict[str, Any] = {
                "content": "".join(parts),
                "status": "error",
                "error": error,
                "model": str(model),
            }
        else:
            error = None
            fields = {"content": "".join(parts).strip(), "model": str(model), **usage}
        latency = (time.perf_counter() - model_started) * 1000
        if error is None:
            fields["latency_ms"] = latency
        reply_text = "".join(parts).strip()
        record_started = time.perf_counter()
        message_id = await self._in_thread(self.record, prepared, actor, fields)
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
            error=error,
            sources=prepared.sources,
        )

    async def reply(
        self,
        actor: Actor,
        conversation_id: int,
        text: str,
        *,
        on_delta: OnDelta | None = None,
        external_id: str | None = None,
    ) -> Reply:
        """Answer a message in a known conversation; a provider failure raises ProviderError."""
        origin = Origin(conversation_id=conversation_id, external_id=external_id)
        return _succeeded(await self.answer(actor, origin, text, on_delta=on_delta))

    async def ask(
        self, actor: Actor, name: str, text: str, *, frontend: str = "cli", **kwargs: Any
    ) -> Reply:
        """One message in a new conversation; a provider failure raises ProviderError."""
        origin = Origin(frontend=frontend, assistant=name)
        return _succeeded(await self.answer(actor, origin, text, **kwargs))


def _succeeded(reply: Reply | None) -> Reply:
    assert reply is not None, "a named conversation or assistant always answers"
    if reply.error is not None:
        raise ProviderError(reply.error)
    return reply
