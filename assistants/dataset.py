"""Promotion datasets: an assistant's examples and collected conversations as OpenAI chat JSONL.

Rules, each counted in the stats (`fewtune dataset stats NAME`):
- Every example becomes one chat: system = the instructions, then its turns.
- Every conversation becomes one chat of its stored turns (failed replies left out).
- Users who opted out are left out: their conversations are skipped whole.
- A 👎 reply is replaced by its correction when someone gave one ("Improve"); without one it
  stays as context but carries `"weight": 0`, so nothing learns from it. A chat with no turn
  left to learn from is dropped.
- Empty turns and chats over the length limit are dropped; exact duplicates are removed.
- A held-out split for evaluation, stable across runs: a chat goes to it when the hash of its
  content falls in the held-out fraction, so adding data never moves an old chat across.
- Trained the way it serves (`serve` given: `[promotion] train_with_examples`): each chat's last
  message gets the prompt `Chat.compose` builds for it (system = instructions, the examples the
  assistant retrieves for it in its layout, the history, the message), then its answer. Example
  turns (the `turns` layout) carry `"weight": 0`, so only the real answers are learned, not the
  examples; the `system` and `pairs` layouts put them in the system or the question. Leave one
  out: a chat never sees its own example, an example with the same turns (after trimming) or
  sharing a question/answer pair with it, nor a held-out example (the evaluation's pool is the
  same). The split, the duplicates and the length rule read the chat's own turns, so the setting
  changes the prompts and never which chats there are.
- Knowledge, as served: a chat from a conversation keeps in its prompt the knowledge chunks its
  last answer was given (their ids are stored with the reply; a chunk since removed is left
  out), so the model learns to answer from them; a chat from an example gets what the knowledge
  search finds for it, as a new message would.

Pure Python on purpose (no torch): the bot and the CLI build datasets without a model.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from assistants.errors import InvalidInput
from assistants.prompt import messages_tokens

if TYPE_CHECKING:
    from assistants.chat import Composed

HELD_OUT_FRACTION = 0.1
MAX_CHAT_TOKENS = 2048  # estimated; a longer chat is dropped rather than cut mid-turn

# The prompt serving builds for a message: (history, message, examples to leave out, seed, the
# knowledge chunks it was answered with: None to search as serving does).
Serve = Callable[[list[dict[str, str]], str, frozenset[int], int, "list[int] | None"], "Composed"]


@dataclass(frozen=True)
class HeldOutItem:
    """One held-out chat as the evaluation asks it: the history, the last question, the answer
    to expect, and the examples its prompts must leave out (leave one out, as in training)."""

    history: list[dict[str, str]]
    question: str
    target: str
    exclude: frozenset[int]


@dataclass
class Dataset:
    train: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    held_out_example_ids: set[int] = field(default_factory=set)  # kept out of few-shot evaluation
    held_out_items: list[HeldOutItem] = field(default_factory=list)

    def jsonl(self, split: str = "train") -> str:
        rows = self.train if split == "train" else self.held_out
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        train, held_out = folder / "train.jsonl", folder / "held_out.jsonl"
        train.write_text(self.jsonl("train"), encoding="utf-8")
        held_out.write_text(self.jsonl("held_out"), encoding="utf-8")
        return train, held_out


def _fingerprint(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(
        [[m["role"], m["content"].strip()] for m in messages if m["role"] != "system"],
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_held_out(fingerprint: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    return int(fingerprint[:8], 16) / 0xFFFFFFFF < fraction


def build_dataset(
    db: Database,
    assistant_id: int,
    instructions: str,
    *,
    held_out_fraction: float = HELD_OUT_FRACTION,
    max_tokens: int = MAX_CHAT_TOKENS,
    serve: Serve | None = None,
) -> Dataset:
    """Collect, filter and split an assistant's training chats; with `serve` (the assistant's
    `Chat.compose`), each carries the examples it would be served with."""
    removed: Counter[str] = Counter()
    # (origin, id, seed, messages, knowledge chunk ids of the last answer or None)
    chats: list[tuple[str, int, int, list[dict[str, Any]], list[int] | None]] = []
    system = {"role": "system", "content": instructions}
    same_turns: defaultdict[str, set[int]] = defaultdict(set)  # fingerprint -> example ids

    for row in db.query(
        "SELECT id, input, output, turns FROM examples WHERE assistant_id = ? ORDER BY id",
        [assistant_id],
    ):
        turns = (
            json.loads(row["turns"])
            if row["turns"]
            else [
                {"role": "user", "content": row["input"]},
                {"role": "assistant", "content": row["output"]},
            ]
        )
        for key in _keys(turns):
            same_turns[key].add(row["id"])
        chats.append(("example", row["id"], row["id"], [system, *turns], None))

    opted_out = {
        r[0] for r in db.execute("SELECT user_id FROM user_preferences WHERE opted_out = 1")
    }
    conversations = db.query(
        "SELECT id, user_id, seed FROM conversations WHERE assistant_id = ? ORDER BY id",
        [assistant_id],
    )
    for conversation in conversations:
        if conversation["user_id"] in opted_out:
            removed["opted_out"] += 1
            continue
        messages, chunk_ids = _conversation_messages(db, conversation["id"], removed)
        if messages:
            chats.append(
                (
                    "conversation",
                    conversation["id"],
                    conversation["seed"],
                    [system, *messages],
                    chunk_ids,
                )
            )

    dataset = Dataset()
    seen: set[str] = set()
    kept: list[tuple[str, int, list[dict[str, Any]], list[int] | None]] = []
    origins = Counter[str]()
    for origin, origin_id, seed, messages, chunk_ids in chats:
        if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
            removed["nothing_to_learn"] += 1
            continue
        if messages_tokens(messages) > max_tokens:  # the prompt builder's estimate
            removed["too_long"] += 1
            continue
        fingerprint = _fingerprint(messages)
        if fingerprint in seen:
            removed["duplicates"] += 1
            continue
        seen.add(fingerprint)
        split = "held_out" if is_held_out(fingerprint, held_out_fraction) else "train"
        if split == "held_out" and origin == "example":
            dataset.held_out_example_ids.add(origin_id)
        kept.append((split, seed, messages, chunk_ids))
        origins[origin] += 1

    tokens = Counter[str]()
    with_examples = 0
    for split, seed, messages, chunk_ids in kept:
        # Leave one out: never the chat's own example, nor one sharing its turns or a pair.
        exclude = frozenset(dataset.held_out_example_ids).union(
            *(same_turns.get(key, ()) for key in _keys(messages))
        )
        if split == "held_out":
            item = _held_out_item(messages, exclude)
            if item is not None:
                dataset.held_out_items.append(item)
        if serve is not None:
            served = _as_served(messages, serve, exclude, seed, max_tokens, chunk_ids)
            with_examples += served is not messages
            messages = served
        (dataset.held_out if split == "held_out" else dataset.train).append({"messages": messages})
        tokens[split] += messages_tokens(messages)
    dataset.stats = {
        "examples": origins["example"],
        "conversations": origins["conversation"],
        "train_chats": len(dataset.train),
        "held_out_chats": len(dataset.held_out),
        "train_tokens": tokens["train"],
        "held_out_tokens": tokens["held_out"],
        "with_examples": serve is not None,  # whether chats carry their retrieved examples
        "chats_with_examples": with_examples,  # how many (train and held out) carry some
        "filters": dict(sorted(removed.items())),  # what each rule removed or changed
    }
    return dataset


def _keys(messages: list[dict[str, Any]]) -> set[str]:
    """Fingerprints of a chat's (or an example's) whole turns and of each question/answer pair
    in it: an example sharing one with a chat is, for that chat, a duplicate of its own."""
    keys = {_fingerprint(messages)}
    for question, answer in zip(messages, messages[1:], strict=False):
        if question["role"] == "user" and answer["role"] == "assistant":
            keys.add(_fingerprint([question, answer]))
    return keys


def _last_answer(messages: list[dict[str, Any]]) -> int | None:
    """Index of the chat's last answer when a question comes right before it."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not answers or answers[-1] < 2 or messages[answers[-1] - 1]["role"] != "user":
        return None
    return answers[-1]


def _held_out_item(messages: list[dict[str, Any]], exclude: frozenset[int]) -> HeldOutItem | None:
    last = _last_answer(messages)
    if last is None or messages[last].get("weight", 1) == 0:
        return None  # nothing to score against
    history = [{"role": m["role"], "content": m["content"]} for m in messages[1 : last - 1]]
    return HeldOutItem(history, messages[last - 1]["content"], messages[last]["content"], exclude)


def _as_served(
    messages: list[dict[str, Any]],
    serve: Serve,
    exclude: frozenset[int],
    seed: int,
    max_tokens: int,
    chunk_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The chat with its last question in the prompt serving builds for it (the same list back
    when neither an example nor knowledge is in it, or when with them it would pass the length limit: a long answer
    the prompt budget did not reckon with). Example turns get weight 0; the chat's own turns
    keep theirs."""
    last = _last_answer(messages)
    if last is None:
        return messages
    own = messages[1 : last - 1]  # the history, as stored (with its weights)
    history = [{"role": m["role"], "content": m["content"]} for m in own]
    try:
        composed = serve(history, messages[last - 1]["content"], exclude, seed, chunk_ids)
    except InvalidInput:
        return messages  # the message alone overflows the prompt budget: it stays as it is
    if not composed.examples and not composed.sources:
        return messages
    # The prompt ends with the history serving kept and the question; before them, the context.
    # The question is the prompt's (the `pairs` layout puts the examples in it).
    kept_history = own[composed.trimmed.get("history_messages", 0) :]
    context = composed.messages[: len(composed.messages) - len(kept_history) - 1]
    served: list[dict[str, Any]] = [
        *({**m, "weight": 0} if m["role"] == "assistant" else dict(m) for m in context),
        *kept_history,
        {**messages[last - 1], "content": composed.messages[-1]["content"]},
        *messages[last:],
    ]
    return served if messages_tokens(served) <= max_tokens else messages


def _conversation_messages(
    db: Database, conversation_id: int, removed: Counter[str]
) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The conversation's turns to learn from, and the knowledge chunk ids its last kept answer
    was given (None when stored before knowledge was recorded)."""
    rows = list(
        db.query(
            "SELECT id, role, content, status, knowledge_used FROM messages "
            "WHERE conversation_id = ? ORDER BY id",
            [conversation_id],
        )
    )
    feedback: dict[int, dict[str, Any]] = {}
    for f in db.query(
        "SELECT f.message_id, f.rating, f.correction FROM feedback f "
        "JOIN messages m ON m.id = f.message_id WHERE m.conversation_id = ? ORDER BY f.id",
        [conversation_id],
    ):
        entry = feedback.setdefault(f["message_id"], {"down": 0, "up": 0, "correction": None})
        if f["rating"] == -1:
            entry["down"] += 1
        elif f["rating"] == 1:
            entry["up"] += 1
        if f["correction"]:
            entry["correction"] = f["correction"]  # the latest correction wins
    messages: list[dict[str, Any]] = []
    chunk_ids: list[int] | None = None
    pending_user: dict[str, Any] | None = None
    for row in rows:
        if row["status"] != "ok":
            removed["failed_replies"] += 1
            pending_user = None
            continue
        content = (row["content"] or "").strip()
        if row["role"] == "user":
            pending_user = {"role": "user", "content": content} if content else None
            if not content:
                removed["empty_turns"] += 1
            continue
        if pending_user is None:
            continue  # a reply whose question is gone (failed or empty) teaches nothing
        note = feedback.get(row["id"])
        turn: dict[str, Any] = {"role": "assistant", "content": content}
        if note and note["correction"]:
            turn["content"] = note["correction"]
            removed["replaced_by_correction"] += 1
        elif note and note["down"] > note["up"]:
            turn["weight"] = 0
            removed["thumbs_down_not_learned"] += 1
        if not turn["content"]:
            removed["empty_turns"] += 1
            pending_user = None
            continue
        messages.extend([pending_user, turn])
        used = row["knowledge_used"]
        chunk_ids = [c["id"] for c in json.loads(used)] if used is not None else None
        pending_user = None
    return messages, chunk_ids
