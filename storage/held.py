"""Copies of an assistant's vectors held in memory, so a message's nearest neighbours come from an
exact search (a matrix product over a few thousand rows: a fraction of a millisecond) instead of
a chromadb query (about 1.5 ms whatever it returns, docs/benchmarks.md).

The index stays what stores the vectors; a copy is one assistant's, read whole on first use and
used while a stamp the caller reads from SQLite is the one it was read under. Every write of an
index is bracketed by writes of the assistant's dirty mark, each of which draws a new stamp
(storage/db.py m012, m014), in this process or any other, so the message after a write reads
the copy again. Where the index cannot be read again (embedded chromadb after another process
wrote to it), the copy as it was answers, with a warning in the log.

Memory: copies within `memory_mb` per kind, per process. Knowledge has no other search, so its
copies are always made and the least recently used dropped. Examples have one (the index
itself), so there a copy's size is known before it is read (the index's count, asked once per
stamp) and a new copy only takes room that is free or held by copies unused for `keep_s`
seconds: when the budget is full of copies in use, the message queries the index instead of
reading a copy that would push out another, to be read again at its next message (reading
1,000 vectors costs 40-80 ms, about 50 chromadb queries).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np
from sqlite_utils import Database

from storage.embeddings import DIMENSION
from storage.index import ExampleIndex, Hit, IndexUnavailable
from storage.settings import IndexSettings

log = logging.getLogger(__name__)

KEEP_S = 600.0  # a copy of examples used in the last 10 minutes is not pushed out by a new one


@dataclass(frozen=True)
class HeldVectors:
    """One assistant's vectors as its index held them under one stamp: rows of unit length,
    `ids` in their order."""

    stamp: int
    ids: list[int]
    matrix: np.ndarray  # (rows, dimensions) float32
    row_of: dict[int, int] = field(repr=False)

    @staticmethod
    def unit(vectors: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @classmethod
    def of(cls, stamp: int, ids: list[int], vectors: np.ndarray) -> HeldVectors:
        return cls(stamp, ids, cls.unit(vectors), {i: row for row, i in enumerate(ids)})

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes

    def cosines(self, vector: np.ndarray) -> np.ndarray:
        """The cosine similarity of every row to `vector`, in the order of `ids`."""
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        return self.matrix @ (query / norm if norm > 0 else query)

    @staticmethod
    def best_rows(cosines: np.ndarray, n: int) -> np.ndarray:
        """The rows of the n highest `cosines`, best first (ties in row order)."""
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        if n < len(cosines):
            top = np.argpartition(-cosines, n - 1)[:n]
            return top[np.lexsort((top, -cosines[top]))]
        return np.argsort(-cosines, kind="stable")

    def nearest(self, vector: np.ndarray, n: int, with_vectors: bool = False) -> list[Hit]:
        """The n rows most like `vector`, best first (ties in row order), as the index's
        `query` returns them."""
        if n <= 0 or not self.ids:
            return []
        cosines = self.cosines(vector)
        rows = self.best_rows(cosines, n)
        return [
            Hit(self.ids[r], float(cosines[r]), self.matrix[r] if with_vectors else None)
            for r in rows
        ]


class Copy(Protocol):
    @property
    def stamp(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


C = TypeVar("C", bound=Copy)


class HeldCopies(Generic[C]):
    """Per-assistant copies, read on first use and again whenever the assistant's stamp has
    changed. Subclasses say how to read the stamp (`_stamp`: None when there is nothing to
    hold), the copy (`_read`) and, where copies in use are kept (`keep_s`), its size before it
    is read (`_size`: None when it is not to be held)."""

    def __init__(self, memory_mb: int, keep_s: float | None = None) -> None:
        self.budget = memory_mb * 1_000_000
        self.keep_s = keep_s  # None: always make the copy, dropping the least recently used
        self._held: OrderedDict[int, tuple[C, float]] = OrderedDict()  # least recent first
        self._bytes = 0  # what the copies in `_held` take
        self._lock = threading.Lock()

    def _stamp(self, assistant_id: int) -> int | None:
        raise NotImplementedError

    def _read(self, assistant_id: int, stamp: int) -> C:
        raise NotImplementedError

    def _size(self, assistant_id: int, stamp: int) -> int | None:
        return 0

    def of(self, assistant_id: int) -> C | None:
        """The assistant's copy; None when it has nothing to hold, or (with `keep_s`) when it
        is not held and the budget is full of copies in use."""
        stamp = self._stamp(assistant_id)
        if stamp is None:
            with self._lock:
                self._drop(assistant_id)
            return None
        now = time.monotonic()
        with self._lock:
            found = self._held.get(assistant_id)
            held = found[0] if found else None
            if held is not None and held.stamp == stamp:
                self._held[assistant_id] = (held, now)
                self._held.move_to_end(assistant_id)
                return held
        if self.keep_s is not None:
            size = self._size(assistant_id, stamp)
            with self._lock:
                if size is None or not self._room(assistant_id, size, now):
                    return None
        # Read outside the lock: other assistants' messages do not wait for this one's copy.
        try:
            read = self._read(assistant_id, stamp)
        except IndexUnavailable as exc:
            if held is None:
                raise
            # Embedded chromadb after another process's write (storage/index.py `_readable`).
            log.warning(
                "answering assistant %s from its copy as read before: %s", assistant_id, exc
            )
            return held
        with self._lock:
            self._drop(assistant_id)
            self._held[assistant_id] = (read, now)
            self._bytes += read.nbytes
            while self.keep_s is None and self._bytes > self.budget and len(self._held) > 1:
                self._drop(next(iter(self._held)))
        return read

    def _drop(self, assistant_id: int) -> None:
        """Forget one copy (under the lock)."""
        found = self._held.pop(assistant_id, None)
        if found is not None:
            self._bytes -= found[0].nbytes

    def _room(self, assistant_id: int, size: int, now: float) -> bool:
        """Whether a copy of `size` bytes fits (under the lock): the assistant's own old copy
        and copies unused for `keep_s` make room, least recently used first; copies in use
        never do, so a new copy cannot push out one that would be read again at once."""
        own = self._held.get(assistant_id)
        free = self.budget - self._bytes + (own[0].nbytes if own else 0)
        idle = [
            other
            for other, (copy, used) in self._held.items()
            if other != assistant_id and now - used >= (self.keep_s or 0.0)
        ]
        while free < size and idle:
            other = idle.pop(0)
            free += self._held[other][0].nbytes
            self._drop(other)
        return free >= size


class HeldExamples(HeldCopies[HeldVectors]):
    """The examples of the assistants a process answers for, held while they are at most
    `[index] held_examples`; `query` answers as `ExampleIndex.query` does, from the copy where
    there is one and from the index otherwise."""

    def __init__(
        self, db: Database, index: Callable[[], ExampleIndex], settings: IndexSettings
    ) -> None:
        super().__init__(settings.memory_mb, keep_s=KEEP_S)
        self.db = db
        self.index = index
        self.max_rows = settings.held_examples
        self._counts: dict[int, tuple[int, int]] = {}  # assistant id: (stamp, vectors)

    def _stamp(self, assistant_id: int) -> int | None:
        """The examples stamp; None when the assistant is gone or nothing is held."""
        row = self.db.execute(
            "SELECT examples_stamp FROM assistants WHERE id = ?", [assistant_id]
        ).fetchone()
        return int(row[0]) if row is not None and self.max_rows else None

    def _size(self, assistant_id: int, stamp: int) -> int | None:
        """The copy's bytes; None beyond `held_examples`. The count is asked once per stamp."""
        counted = self._counts.get(assistant_id)
        if counted is None or counted[0] != stamp:
            counted = self._counts[assistant_id] = (stamp, self.index().count(assistant_id))
        rows = counted[1]
        return rows * DIMENSION * 4 if rows <= self.max_rows else None

    def _read(self, assistant_id: int, stamp: int) -> HeldVectors:
        ids, vectors = self.index().everything(assistant_id)
        return HeldVectors.of(stamp, ids, vectors)

    def query(
        self, assistant_id: int, vector: np.ndarray, n: int, with_vectors: bool = False
    ) -> list[Hit]:
        """The n nearest examples of one assistant, best first."""
        try:
            held = self.of(assistant_id)
        except IndexUnavailable:
            # Not read whole (a Chroma server down, or embedded chromadb after another process
            # wrote): the index's own query answers, or says so in its one sentence.
            held = None
        if held is None:
            return self.index().query(assistant_id, vector, n, with_vectors)
        return held.nearest(vector, n, with_vectors)
