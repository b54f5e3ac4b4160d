"""Each assistant's knowledge held in memory, its chunks' vectors and words, so a message's best
chunks come from an exact search of both (ranking.py) instead of a query of the knowledge index
and of a full-text index.

An assistant holds at most `max_chunks` chunks (2,000: 3 MB of vectors), where a matrix product
and a few array sums take a fraction of a millisecond and find the true best, while each
chromadb query costs about a millisecond whatever it returns and a BM25 query of a full-text
index shared by every assistant grows with all of their files (docs/benchmarks.md). The
knowledge index stays what stores the vectors and SQLite what stores the texts; this is a copy
of both for one assistant, read whole on first use.

A copy is used while the assistant's `knowledge_stamp` (storage/db.py m012) is the one it was
read under: every write of the knowledge index draws a new stamp as it ends, in this process or
any other, so the next message reads the copy again. Checking costs one SQLite lookup, which
also answers "has it any knowledge?" (none: no index is opened). Where the index cannot be read
again (embedded chromadb after another process wrote to it), the copy as it was answers, with a
warning in the log. Copies of the assistants used least recently are dropped beyond
`[knowledge] memory_mb`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlite_utils import Database

from assistants.knowledge.ranking import Words
from storage.index import ExampleIndex, IndexUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """One assistant's chunks as its knowledge index and SQLite held them under one stamp: the
    vectors (rows of unit length, `ids` in order) and the words of the texts."""

    stamp: int
    ids: list[int]
    matrix: np.ndarray  # (chunks, dimensions) float32
    words: Words
    row_of: dict[int, int] = field(repr=False)

    @classmethod
    def of(cls, stamp: int, ids: list[int], vectors: np.ndarray, words: Words) -> Held:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        matrix = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return cls(stamp, ids, matrix, words, {chunk_id: row for row, chunk_id in enumerate(ids)})

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.words.nbytes

    def cosines(self, vector: np.ndarray) -> np.ndarray:
        """The cosine similarity of every chunk to `vector`, in the order of `ids`."""
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        return self.matrix @ (query / norm if norm > 0 else query)


class HeldKnowledge:
    """The knowledge of the assistants a process answers for, read on first use and again
    whenever the assistant's knowledge stamp has changed."""

    def __init__(self, db: Database, index: Callable[[], ExampleIndex], memory_mb: int) -> None:
        self.db = db
        self.index = index
        self.budget = memory_mb * 1_000_000
        self._held: OrderedDict[int, Held] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def of(self, assistant_id: int) -> Held | None:
        """The assistant's knowledge, or None when it has none (or is gone)."""
        row = self.db.execute(
            "SELECT knowledge_stamp, EXISTS (SELECT 1 FROM knowledge_chunks "
            "WHERE assistant_id = a.id) FROM assistants a WHERE id = ?",
            [assistant_id],
        ).fetchone()
        if row is None or not row[1]:
            with self._lock:
                self._held.pop(assistant_id, None)
            return None
        stamp = int(row[0])
        with self._lock:
            held = self._held.get(assistant_id)
            if held is not None and held.stamp == stamp:
                self._held.move_to_end(assistant_id)
                return held
        # Read outside the lock: other assistants' messages do not wait for this one's copy.
        try:
            read = self._read(assistant_id, stamp)
        except IndexUnavailable as exc:
            if held is None:
                raise
            # Embedded chromadb after another process's write (storage/index.py `_readable`):
            # answer from the copy as it was, as examples are, and try again next message.
            log.warning(
                "answering assistant %s from its knowledge as read before: %s", assistant_id, exc
            )
            return held
        with self._lock:
            self._held[assistant_id] = read
            self._held.move_to_end(assistant_id)
            size = sum(h.nbytes for h in self._held.values())
            while size > self.budget and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                size -= dropped.nbytes
        return read

    def _read(self, assistant_id: int, stamp: int) -> Held:
        ids, vectors = self.index().everything(assistant_id)
        rows = self.db.execute(
            "SELECT id, text FROM knowledge_chunks WHERE assistant_id = ? ORDER BY id",
            [assistant_id],
        ).fetchall()
        words = Words([r[0] for r in rows], [r[1] for r in rows])
        return Held.of(stamp, ids, vectors, words)
