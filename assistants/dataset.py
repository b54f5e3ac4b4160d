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

Pure Python on purpose (no torch): the bot and the CLI build datasets without a model.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from assistants.prompt import messages_tokens

HELD_OUT_FRACTION = 0.1
MAX_CHAT_TOKENS = 2048  # estimated; a longer chat is dropped rather than cut mid-turn


@dataclass
class Dataset:
    train: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    held_out_example_ids: set[int] = field(default_factory=set)  # kept out of few-shot evaluation

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
) -> Dataset:
    """Collect, filter and split an assistant's training chats."""
    removed: Counter[str] = Counter()
    chats: list[tuple[str, int, list[dict[str, Any]]]] = []  # (origin, id, messages)
    system = {"role": "system", "content": instructions}

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
        chats.append(("example", row["id"], [system, *turns]))

    opted_out = {
        r[0] for r in db.execute("SELECT user_id FROM user_preferences WHERE opted_out = 1")
    }
    conversations = db.query(
        "SELECT id, user_id FROM conversations WHERE assistant_id = ? ORDER BY id", [assistant_id]
    )
    for conversation in conversations:
        if conversation["user_id"] in opted_out:
            removed["opted_out"] += 1
            continue
        messages = _conversation_messages(db, conversation["id"], removed)
        if messages:
            chats.append(("conversation", conversation["id"], [system, *messages]))

    dataset = Dataset()
    seen: set[str] = set()
    tokens = Counter[str]()
    origins = Counter[str]()
    for origin, origin_id, messages in chats:
        if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
            removed["nothing_to_learn"] += 1
            continue
        size = messages_tokens(messages)  # the prompt builder's estimate
        if size > max_tokens:
            removed["too_long"] += 1
            continue
        fingerprint = _fingerprint(messages)
        if fingerprint in seen:
            removed["duplicates"] += 1
            continue
        seen.add(fingerprint)
        split = "held_out" if is_held_out(fingerprint, held_out_fraction) else "train"
        (dataset.held_out if split == "held_out" else dataset.train).append({"messages": messages})
        if split == "held_out" and origin == "example":
            dataset.held_out_example_ids.add(origin_id)
        tokens[split] += size
        origins[origin] += 1
    dataset.stats = {
        "examples": origins["example"],
        "conversations": origins["conversation"],
        "train_chats": len(dataset.train),
        "held_out_chats": len(dataset.held_out),
        "train_tokens": tokens["train"],
        "held_out_tokens": tokens["held_out"],
        "filters": dict(sorted(removed.items())),  # what each rule removed or changed
    }
    return dataset


def _conversation_messages(
    db: Database, conversation_id: int, removed: Counter[str]
) -> list[dict[str, Any]]:
    rows = list(
        db.query(
            "SELECT id, role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
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
        pending_user = None
    return messages
