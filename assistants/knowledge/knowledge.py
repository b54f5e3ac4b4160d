"""Knowledge: files an assistant answers from. SQLite holds each file's record and its chunks'
text; the assistant's knowledge collection in the index holds the chunks' vectors.

Adding is all or nothing, over every file of one call: each is checked (size, kind, duplicate,
text) and chunked before anything is stored. Writes follow examples.py: rows and the
`knowledge_dirty` mark in one transaction under the core's lock, the index written outside it,
then the mark taken back; a failed index write deletes the rows again.
"""

from __future__ import annotations

import builtins  # the `list` method below shadows the built-in in annotations
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlite_utils import Database

from assistants.actor import Actor
from assistants.assistant import Assistant, Assistants, now
from assistants.errors import AlreadyExists, InvalidInput, LimitExceeded, NotFound
from assistants.knowledge.chunks import Piece, chunk
from assistants.knowledge.extract import extract, kind_of
from assistants.knowledge.held import HeldKnowledge
from assistants.knowledge.ranking import rank
from assistants.text import check_text
from storage.index import ExampleIndex
from storage.settings import KnowledgeSettings

MAX_NAME = 200  # characters of a file's name
MAX_K = 100


@dataclass(frozen=True)
class KnowledgeFile:
    id: int
    assistant_id: int
    name: str
    kind: str
    size: int
    sha256: str
    chunks: int
    added_by: str
    added_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    id: int
    file_id: int
    position: int  # 0-based, in its file
    location: str  # page, heading path, rows or item; "" for the whole file
    text: str


@dataclass(frozen=True)
class Found:
    """A chunk a search found, with its file and cosine score."""

    file: KnowledgeFile
    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Prepared:
    """A file ready to store: checked, extracted and chunked (or read from an export)."""

    name: str
    kind: str
    size: int
    sha256: str
    pieces: list[Piece]


class Knowledge:
    def __init__(
        self,
        db: Database,
        assistants: Assistants,
        settings: KnowledgeSettings,
        held: HeldKnowledge,
        lock: threading.RLock,
    ) -> None:
        self.db = db
        self.assistants = assistants
        self.settings = settings
        self.held = held
        self._index = held.index
        self.lock = lock

    # -- reading -------------------------------------------------------------------------------

    def list(self, actor: Actor, name: str) -> builtins.list[KnowledgeFile]:
        """An assistant's knowledge files, oldest first (its managers only)."""
        assistant = self.assistants.get_managed(actor, name, "see the knowledge files of")
        return self._files(assistant.id)

    def _files(self, assistant_id: int) -> builtins.list[KnowledgeFile]:
        rows = self.db.query(
            "SELECT * FROM knowledge_files WHERE assistant_id = ? ORDER BY id", [assistant_id]
        )
        return [KnowledgeFile(**r) for r in rows]

    def search(self, actor: Actor, name: str, query: str, k: int = 4) -> builtins.list[Found]:
        """The k chunks that answer the query best (by meaning and by words: ranking.py), best
        first, with their files and cosine scores."""
        if not query.strip():
            raise InvalidInput("The search query is empty.")
        check_text(query, "The search query")
        if not 1 <= k <= MAX_K:
            raise InvalidInput(f"-k must be from 1 to {MAX_K}.")
        assistant = self.assistants.get_managed(actor, name, "search the knowledge of")
        held = self.held.of(assistant.id)
        if held is None:
            return []
        vector = self._index().embedder.embed_one(query)
        hits = rank(held, query, vector, k)
        ids = [h.chunk_id for h in hits]
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT id, file_id, position, location, text FROM knowledge_chunks "
            f"WHERE assistant_id = ? AND id IN ({marks})",
            [assistant.id, *ids],
        )
        chunks = {r[0]: Chunk(*r) for r in rows}
        files = {f.id: f for f in self._files(assistant.id)}
        return [
            Found(files[chunks[h.chunk_id].file_id], chunks[h.chunk_id], h.score)
            for h in hits
            if h.chunk_id in chunks
        ]

    def chunks_of(self, file_id: int) -> builtins.list[Chunk]:
        """A file's chunks in order (for export; the caller has checked who asks)."""
        rows = self.db.execute(
            "SELECT id, file_id, position, location, text FROM knowledge_chunks "
            "WHERE file_id = ? ORDER BY position",
            [file_id],
        )
        return [Chunk(*r) for r in rows]

    def _chunk_count(self, assistant_id: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM knowledge_chunks WHERE assistant_id = ?", [assistant_id]
        ).fetchone()
        return int(row[0])

    # -- writing -------------------------------------------------------------------------------

    def add(
        self, actor: Actor, name: str, files: Sequence[tuple[str, bytes]]
    ) -> builtins.list[KnowledgeFile]:
        """Add files (name, content) whole, all of them or none: the first one refused names
        itself and why, and nothing is stored."""
        if not files:
            raise InvalidInput("Name at least one file to add.")
        assistant = self.assistants.get_managed(actor, name, "add knowledge to")
        index = self._index()
        for file_name, data in files:
            self._check_file(file_name, data)
        self._check_new(assistant, [(n, _sha256(d)) for n, d in files])
        prepared = [self._prepare(n, d, index) for n, d in files]
        return self._store(assistant, prepared, actor.user_id, index)

    def add_prepared(
        self, actor: Actor, name: str, prepared: builtins.list[Prepared]
    ) -> builtins.list[KnowledgeFile]:
        """Add files already chunked (an exported assistant's), all of them or none."""
        assistant = self.assistants.get_managed(actor, name, "add knowledge to")
        index = self._index()
        self._check_new(assistant, [(p.name, p.sha256) for p in prepared])
        return self._store(assistant, prepared, actor.user_id, index)

    def _store(
        self,
        assistant: Assistant,
        prepared: builtins.list[Prepared],
        author: str,
        index: ExampleIndex,
    ) -> builtins.list[KnowledgeFile]:
        """Rows and the mark under the lock, the index outside it, the mark taken back; a
        failed index write deletes the rows again."""
        file_ids, chunk_ids, texts = self._insert_rows(assistant, prepared, author)
        try:
            index.add(assistant.id, chunk_ids, texts)
        except Exception:
            with self.lock, self.db.conn:
                marks = ",".join("?" * len(file_ids))
                self.db.execute(f"DELETE FROM knowledge_files WHERE id IN ({marks})", file_ids)
                self.assistants.unmark_dirty(assistant.id, "knowledge_dirty")
            raise
        with self.lock, self.db.conn:
            self.assistants.unmark_dirty(assistant.id, "knowledge_dirty")
        return [f for f in self._files(assistant.id) if f.id in set(file_ids)]

    def check_size(self, file_name: str, size: int) -> None:
        """A file over `[knowledge] max_file_mb` is refused (a frontend asks before downloading)."""
        if size > self.settings.max_file_mb * 1_000_000:
            raise LimitExceeded(
                f"{file_name} is {size / 1_000_000:.1f} MB; the limit is "
                f"{self.settings.max_file_mb} MB a file: split it or add only the parts needed."
            )

    def _check_file(self, file_name: str, data: bytes) -> None:
        if not file_name.strip() or len(file_name) > MAX_NAME:
            raise InvalidInput(f"A file's name must be 1 to {MAX_NAME} characters.")
        check_text(file_name, "The file's name")
        kind_of(file_name)
        self.check_size(file_name, len(data))
        if not data:
            raise InvalidInput(f"{file_name} is empty; add a file that has some text.")

    def _check_new(self, assistant: Assistant, files: builtins.list[tuple[str, str]]) -> None:
        """Duplicates (by content, or by name: citations name files) and the file count, against
        the files stored and among the new ones. Checked again under the lock as rows go in."""
        stored = self._files(assistant.id)
        names = {f.name.lower(): f.name for f in stored}
        hashes = {f.sha256: f.name for f in stored}
        new_names: dict[str, str] = {}
        new_hashes: dict[str, str] = {}
        for file_name, digest in files:
            key = file_name.lower()
            if key in new_names or digest in new_hashes:
                twin = new_names.get(key) or new_hashes[digest]
                raise AlreadyExists(
                    f"{file_name} is given twice (as {twin} too); add each file once. "
                    "Nothing was added."
                )
            if digest in hashes:
                where = "is" if hashes[digest].lower() == key else "has the same content as"
                what = "" if where == "is" else f" {hashes[digest]},"
                raise AlreadyExists(
                    f"{file_name} {where}{what} already in {assistant.name!r}; nothing was added."
                )
            if key in names:
                raise AlreadyExists(
                    f"{assistant.name!r} already has a file called {names[key]}; remove it first "
                    "(`knowledge remove`) or rename the new one. Nothing was added."
                )
            new_names[key] = new_hashes[digest] = file_name
        total = len(stored) + len(files)
        if total > self.settings.max_files:
            raise LimitExceeded(
                f"{assistant.name!r} would have {total} knowledge files; the limit is "
                f"{self.settings.max_files}. Remove some first; nothing was added."
            )

    def _prepare(self, file_name: str, data: bytes, index: ExampleIndex) -> Prepared:
        extracted = extract(file_name, data)
        pieces = chunk(extracted.sections, index.embedder.count_tokens)
        return Prepared(file_name, extracted.kind, len(data), _sha256(data), pieces)

    def _insert_rows(
        self, assistant: Assistant, prepared: builtins.list[Prepared], author: str
    ) -> tuple[builtins.list[int], builtins.list[int], builtins.list[str]]:
        stamp = now()
        file_ids: builtins.list[int] = []
        chunk_ids: builtins.list[int] = []
        texts: builtins.list[str] = []
        with self.lock:
            # Again under the lock: another call of this process may have added files meanwhile.
            self._check_new(assistant, [(p.name, p.sha256) for p in prepared])
            total = self._chunk_count(assistant.id) + sum(len(p.pieces) for p in prepared)
            if total > self.settings.max_chunks:
                raise LimitExceeded(
                    f"{assistant.name!r} would have {total:,} knowledge chunks; the limit is "
                    f"{self.settings.max_chunks:,}. Add smaller files or remove some first; "
                    "nothing was added."
                )
            with self.db.conn:
                self.assistants.mark_dirty(assistant.id, "knowledge_dirty")
                for p in prepared:
                    cursor = self.db.execute(
                        "INSERT INTO knowledge_files (assistant_id, name, kind, size, sha256, "
                        "chunks, added_by, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            assistant.id,
                            p.name,
                            p.kind,
                            p.size,
                            p.sha256,
                            len(p.pieces),
                            author,
                            stamp,
                        ],
                    )
                    file_id = int(cursor.lastrowid)  # type: ignore[arg-type]
                    file_ids.append(file_id)
                    for position, piece in enumerate(p.pieces):
                        cursor = self.db.execute(
                            "INSERT INTO knowledge_chunks (file_id, assistant_id, position, "
                            "location, text) VALUES (?, ?, ?, ?, ?)",
                            [file_id, assistant.id, position, piece.location, piece.text],
                        )
                        chunk_ids.append(int(cursor.lastrowid))  # type: ignore[arg-type]
                        texts.append(piece.text)
        return file_ids, chunk_ids, texts

    def remove(self, actor: Actor, name: str, file_id: int) -> KnowledgeFile:
        """Remove one file and its chunks."""
        assistant = self.assistants.get_managed(actor, name, "remove knowledge from")
        found = [f for f in self._files(assistant.id) if f.id == int(file_id)]
        if not found:
            raise NotFound(
                f"{assistant.name!r} has no knowledge file #{file_id}; `knowledge list` shows them."
            )
        index = self._index()
        with self.lock, self.db.conn:
            chunk_ids = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM knowledge_chunks WHERE file_id = ?", [found[0].id]
                )
            ]
            self.assistants.mark_dirty(assistant.id, "knowledge_dirty")
            self.db.execute("DELETE FROM knowledge_files WHERE id = ?", [found[0].id])
        index.delete(assistant.id, chunk_ids)
        with self.lock, self.db.conn:
            self.assistants.unmark_dirty(assistant.id, "knowledge_dirty")
        return found[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
