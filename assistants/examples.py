"""Examples: pairs of a message and a good answer (optionally several turns) that teach an
assistant by being put in its prompt. SQLite holds them; the index holds their input vectors.

Writes go SQLite first (with the assistant marked `index_dirty` in the same transaction, under
the core's lock), then the index (outside the lock: embedding takes long), then the mark is taken
back. If the index write fails, the SQLite rows are removed again
and the user is told; if the process dies in between, the mark makes the next start repair it.
"""

from __future__ import annotations

import builtins  # the `list` methods below shadow the built-in in annotations
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistant, Assistants, now
from assistants.errors import InvalidInput, LimitExceeded, NotFound
from assistants.example_files import ExampleData, dump_examples, parse_examples
from assistants.text import check_text
from storage.index import ExampleIndex

MAX_EXAMPLES_PER_ASSISTANT = 100_000
MAX_FIELD = 8_000  # characters of one example's input or output


@dataclass
class Example:
    id: int
    assistant_id: int
    input: str
    output: str
    source: str
    author_id: str
    created_at: str
    turns: list[dict[str, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["turns"] is None:
            del data["turns"]
        return data

    def as_messages(self) -> list[dict[str, str]]:
        """The example as chat turns: its turns, or one user and one assistant message."""
        if self.turns:
            return [dict(t) for t in self.turns]
        return [
            {"role": "user", "content": self.input},
            {"role": "assistant", "content": self.output},
        ]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Example:
        fields = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        fields["turns"] = json.loads(row["turns"]) if row.get("turns") else None
        return cls(**fields)


@dataclass(frozen=True)
class ImportResult:
    added: int
    duplicates: int


def content_hash(data: ExampleData) -> str:
    key = json.dumps([data.input.strip(), data.output.strip(), data.turns], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()


def check_example(data: ExampleData, where: str = "The example") -> None:
    if not data.input.strip() or not data.output.strip():
        raise InvalidInput(f"{where} needs both an input and an output.")
    for label, text in (("input", data.input), ("output", data.output)):
        check_text(text, f"{where}'s {label}")
        if len(text) > MAX_FIELD:
            raise InvalidInput(
                f"{where}'s {label} is {len(text):,} characters; the limit is {MAX_FIELD:,}."
            )


class Examples:
    def __init__(
        self,
        db: Database,
        assistants: Assistants,
        index: Callable[[], ExampleIndex],
        lock: threading.RLock,
    ) -> None:
        self.db = db
        self.assistants = assistants
        self._index = index
        self.lock = lock

    # -- reading -------------------------------------------------------------------------------

    def by_ids(self, assistant_id: int, ids: list[int]) -> list[Example]:
        """Examples of one assistant by id, in the order asked (missing ids are skipped)."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.db.query(
            f"SELECT * FROM examples WHERE assistant_id = ? AND id IN ({marks})",
            [assistant_id, *ids],
        )
        found = {r["id"]: Example.from_row(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def inputs(self, assistant_id: int, ids: list[int]) -> dict[int, str]:
        """The input texts of one assistant's examples by id (missing ids are absent)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT id, input FROM examples WHERE assistant_id = ? AND id IN ({marks})",
            [assistant_id, *ids],
        )
        return {r[0]: r[1] for r in rows}

    def first(self, assistant_id: int, n: int) -> list[Example]:
        rows = self.db.query(
            "SELECT * FROM examples WHERE assistant_id = ? ORDER BY id LIMIT ?", [assistant_id, n]
        )
        return [Example.from_row(r) for r in rows]

    def all_ids(self, assistant_id: int) -> list[int]:
        rows = self.db.execute(
            "SELECT id FROM examples WHERE assistant_id = ? ORDER BY id", [assistant_id]
        )
        return [r[0] for r in rows]

    def list(
        self, actor: Actor, name: str, offset: int = 0, limit: int | None = None
    ) -> list[Example]:
        """An assistant's examples, oldest first. Like its instructions, only those who may
        manage it see them."""
        assistant = self.assistants.get_managed(actor, name, "see the examples of")
        rows = self.db.query(
            "SELECT * FROM examples WHERE assistant_id = ? ORDER BY id LIMIT ? OFFSET ?",
            [assistant.id, -1 if limit is None else limit, offset],
        )
        return [Example.from_row(r) for r in rows]

    def count(self, actor: Actor, name: str) -> int:
        assistant = self.assistants.get(actor, name)
        return self._count(assistant.id)

    def _count(self, assistant_id: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM examples WHERE assistant_id = ?", [assistant_id]
        ).fetchone()
        return int(row[0])

    def search(
        self, actor: Actor, name: str, query: str, k: int = 4
    ) -> builtins.list[tuple[Example, float]]:
        """The k examples whose input is most like the query, best first, with cosine scores."""
        if not query.strip():
            raise InvalidInput("The search query is empty.")
        check_text(query, "The search query")
        if not 1 <= k <= 100:
            raise InvalidInput("-k must be from 1 to 100.")
        assistant = self.assistants.get_managed(actor, name, "search the examples of")
        index = self._index()
        hits = index.query(assistant.id, index.embedder.embed_one(query), k)
        examples = {e.id: e for e in self.by_ids(assistant.id, [h.example_id for h in hits])}
        return [(examples[h.example_id], h.score) for h in hits if h.example_id in examples]

    # -- writing -------------------------------------------------------------------------------

    def add(
        self,
        actor: Actor,
        name: str,
        input: str,
        output: str,
        source: str = "manual",
        assistant: Assistant | None = None,
    ) -> Example:
        data = ExampleData(input=input, output=output)
        check_example(data)
        assistant = assistant or self.assistants.get_managed(actor, name, "add examples to")
        added, _ = self._insert(assistant, [data], source, actor.user_id)
        if not added:
            raise InvalidInput(f"{assistant.name!r} already has this example.")
        return added[0]

    def import_data(self, actor: Actor, name: str, filename: str, data: bytes) -> ImportResult:
        """Import a JSONL or CSV file: all or nothing; duplicates skipped and counted."""
        assistant = self.assistants.get_managed(actor, name, "import examples to")
        items = parse_examples(filename, data)
        for number, item in items:
            check_example(item, f"Line {number}")
        added, duplicates = self._insert(assistant, [i for _, i in items], "import", actor.user_id)
        return ImportResult(added=len(added), duplicates=duplicates)

    def _insert(
        self, assistant: Assistant, items: builtins.list[ExampleData], source: str, author: str
    ) -> tuple[builtins.list[Example], int]:
        """Store new examples: rows and the dirty mark in one transaction under the core's lock,
        then the index written outside it (embedding a large import takes long and every chat
        writes under that lock), then the mark taken back. A failed index write deletes the rows."""
        index = self._index()
        ids, texts, duplicates = self._insert_rows(assistant, items, source, author)
        if not ids:
            return [], duplicates
        try:
            index.add(assistant.id, ids, texts)
        except Exception:
            with self.lock, self.db.conn:
                marks = ",".join("?" * len(ids))
                self.db.execute(f"DELETE FROM examples WHERE id IN ({marks})", ids)
                self.assistants.unmark_dirty(assistant.id, "index_dirty")
            raise
        with self.lock, self.db.conn:
            self.assistants.unmark_dirty(assistant.id, "index_dirty")
        return self.by_ids(assistant.id, ids), duplicates

    def _insert_rows(
        self, assistant: Assistant, items: builtins.list[ExampleData], source: str, author: str
    ) -> tuple[builtins.list[int], builtins.list[str], int]:
        """The SQLite half of `_insert`: the new rows' ids and inputs, and the duplicates skipped.
        Checking for duplicates and inserting under one lock means two imports of the same file
        at once in this process cannot both insert: the second finds the first's rows. Another
        process (a second `fewtune example import`) holds no such lock, so a row it stored in
        between is skipped by the UNIQUE constraint and counted as a duplicate."""
        seen: set[str] = set()
        rows = []
        stamp = now()
        for item in items:
            digest = content_hash(item)
            if digest in seen:
                continue
            seen.add(digest)
            rows.append(
                {
                    "assistant_id": assistant.id,
                    "input": item.input.strip(),
                    "output": item.output.strip(),
                    "turns": json.dumps(item.turns, ensure_ascii=False) if item.turns else None,
                    "source": source,
                    "author_id": author,
                    "content_hash": digest,
                    "created_at": stamp,
                }
            )
        with self.lock:
            existing = {
                r[0]
                for r in self.db.execute(
                    "SELECT content_hash FROM examples WHERE assistant_id = ?", [assistant.id]
                )
            }
            new_rows = [r for r in rows if r["content_hash"] not in existing]
            total = self._count(assistant.id) + len(new_rows)
            if total > MAX_EXAMPLES_PER_ASSISTANT:
                raise LimitExceeded(
                    f"{assistant.name!r} would have {total:,} examples; the limit is "
                    f"{MAX_EXAMPLES_PER_ASSISTANT:,}. Remove some first."
                )
            if not new_rows:
                return [], [], len(items)
            columns = ", ".join(new_rows[0])
            marks = ", ".join("?" * len(new_rows[0]))
            ids: builtins.list[int] = []
            texts: builtins.list[str] = []
            with self.db.conn:
                self.assistants.mark_dirty(assistant.id, "index_dirty")
                for row in new_rows:
                    cursor = self.db.execute(
                        f"INSERT OR IGNORE INTO examples ({columns}) VALUES ({marks})",
                        list(row.values()),
                    )
                    if cursor.rowcount == 1:
                        ids.append(int(cursor.lastrowid))  # type: ignore[arg-type]
                        texts.append(str(row["input"]))
                if not ids:  # nothing new: nothing for the index
                    self.assistants.unmark_dirty(assistant.id, "index_dirty")
        return ids, texts, len(items) - len(ids)

    def add_correction(self, assistant: Assistant, input: str, output: str, author: str) -> Example:
        data = ExampleData(input=input, output=output)
        check_example(data)
        added, _ = self._insert(assistant, [data], "correction", author)
        if not added:
            raise InvalidInput(f"{assistant.name!r} already has this example.")
        return added[0]

    def remove(self, actor: Actor, name: str, example_id: int) -> Example:
        assistant = self.assistants.get_managed(actor, name, "remove examples from")
        found = self.by_ids(assistant.id, [int(example_id)])
        if not found:
            raise NotFound(f"{assistant.name!r} has no example #{example_id}.")
        index = self._index()
        with self.lock, self.db.conn:
            self.assistants.mark_dirty(assistant.id, "index_dirty")
            self.db.execute("DELETE FROM examples WHERE id = ?", [found[0].id])
        index.delete(assistant.id, [found[0].id])
        with self.lock, self.db.conn:
            self.assistants.unmark_dirty(assistant.id, "index_dirty")
        return found[0]

    def export(self, actor: Actor, name: str, fmt: str = "jsonl") -> str:
        assistant = self.assistants.get_managed(actor, name, "export")
        rows = self.db.query(
            "SELECT * FROM examples WHERE assistant_id = ? ORDER BY id", [assistant.id]
        )
        items = [
            ExampleData(r["input"], r["output"], json.loads(r["turns"]) if r["turns"] else None)
            for r in rows
        ]
        return dump_examples(items, fmt)
