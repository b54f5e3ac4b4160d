"""Each assistant's knowledge held in memory, its chunks' vectors and words, so a message's best
chunks come from an exact search of both (ranking.py) instead of a query of the knowledge index
and of a full-text index.

An assistant holds at most `max_chunks` chunks (2,000: 3 MB of vectors), where a matrix product
and a few array sums take a fraction of a millisecond and find the true best, while each
chromadb query costs about a millisecond whatever it returns and a BM25 query of a full-text
index shared by every assistant grows with all of their files (docs/benchmarks.md). The
knowledge index stays what stores the vectors and SQLite what stores the texts; this is a copy
of both for one assistant, read whole on first use (storage/held.py: used while the assistant's
`knowledge_stamp`, m012, is the one it was read under; the copy as it was where embedded
chromadb cannot be read again). The stamp's lookup also answers "has it any knowledge?" (none:
no index is opened). Copies of the assistants used least recently are dropped beyond
`[knowledge] memory_mb`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlite_utils import Database

from assistants.knowledge.ranking import Words
from storage.held import HeldCopies, HeldVectors
from storage.index import ExampleIndex


@dataclass(frozen=True)
class Held(HeldVectors):
    """One assistant's chunks as its knowledge index and SQLite held them under one stamp: the
    vectors (rows of unit length, `ids` in order) and the words of the texts."""

    words: Words = field(repr=False)

    @classmethod
    def read(cls, stamp: int, ids: list[int], vectors: np.ndarray, words: Words) -> Held:
        held = HeldVectors.of(stamp, ids, vectors)
        return cls(held.stamp, held.ids, held.matrix, held.row_of, words)

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.words.nbytes


class HeldKnowledge(HeldCopies[Held]):
    """The knowledge of the assistants a process answers for, read on first use and again
    whenever the assistant's knowledge stamp has changed."""

    def __init__(self, db: Database, index: Callable[[], ExampleIndex], memory_mb: int) -> None:
        super().__init__(memory_mb)
        self.db = db
        self.index = index

    def _stamp(self, assistant_id: int) -> int | None:
        """The knowledge stamp; None when the assistant has no knowledge (or is gone)."""
        row = self.db.execute(
            "SELECT knowledge_stamp, EXISTS (SELECT 1 FROM knowledge_chunks "
            "WHERE assistant_id = a.id) FROM assistants a WHERE id = ?",
            [assistant_id],
        ).fetchone()
        return int(row[0]) if row is not None and row[1] else None

    def _read(self, assistant_id: int, stamp: int) -> Held:
        ids, vectors = self.index().everything(assistant_id)
        rows = self.db.execute(
            "SELECT id, text FROM knowledge_chunks WHERE assistant_id = ? ORDER BY id",
            [assistant_id],
        ).fetchall()
        words = Words([r[0] for r in rows], [r[1] for r in rows])
        return Held.read(stamp, ids, vectors, words)
