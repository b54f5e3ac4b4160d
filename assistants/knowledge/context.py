"""Knowledge for one message: the assistant's chunks that answer it best (by meaning and by
words, ranking.py; at most `knowledge_k`, each at least `min_score` alike), best first, with
their files and locations. An assistant without knowledge costs one SQLite lookup and opens no
index (held.py). Given the chunk ids a reply was answered with (a training chat rebuilt as
served), those chunks come back instead, in that order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from assistants.knowledge.held import HeldKnowledge
from assistants.knowledge.ranking import rank
from storage.settings import KnowledgeSettings


@dataclass(frozen=True)
class Passage:
    """A chunk going into a prompt: what the prompt quotes and what a citation names."""

    chunk_id: int
    file_id: int
    file: str
    location: str  # page, heading path, rows or item; "" for the whole file
    text: str
    score: float | None  # cosine similarity to the message; None when reused by id

    @property
    def label(self) -> str:
        """How a citation names it: "guide.pdf, page 2", or the file alone."""
        return f"{self.file}, {self.location}" if self.location else self.file


@dataclass(frozen=True)
class Source:
    """A passage a reply was given, as frontends cite it under the answer: its marker, file and
    location (never its text: a guild assistant's files are for its managers to read)."""

    number: int  # the reply cites it as [number]
    chunk_id: int
    file_id: int
    file: str
    location: str
    score: float | None

    @property
    def label(self) -> str:
        return f"{self.file}, {self.location}" if self.location else self.file

    @classmethod
    def of(cls, number: int, passage: Passage) -> Source:
        p = passage
        return cls(number, p.chunk_id, p.file_id, p.file, p.location, p.score)


def sources_line(sources: Sequence[Source]) -> str:
    """The line under an answer: "Sources: [1] guide.pdf, page 2 · [2] faq.md"."""
    return "Sources: " + " · ".join(f"[{s.number}] {s.label}" for s in sources)


def knowledge_for(
    db: Database,
    held_knowledge: HeldKnowledge,
    settings: KnowledgeSettings,
    assistant_id: int,
    text: str,
    *,
    query: np.ndarray | None = None,
    chunk_ids: Sequence[int] | None = None,
) -> list[Passage]:
    """The passages for a message, best first. `query` is the message's vector when the
    example selection already embedded it (same embedder: no second embedding)."""
    if chunk_ids is not None:
        return passages(db, assistant_id, chunk_ids)
    held = held_knowledge.of(assistant_id)
    if held is None:
        return []
    vector = query if query is not None else held_knowledge.index().embedder.embed_one(text)
    hits = [
        h for h in rank(held, text, vector, settings.knowledge_k) if h.score >= settings.min_score
    ]
    score_of = {h.chunk_id: h.score for h in hits}
    return [
        Passage(p.chunk_id, p.file_id, p.file, p.location, p.text, score_of[p.chunk_id])
        for p in passages(db, assistant_id, [h.chunk_id for h in hits])
    ]


def passages(db: Database, assistant_id: int, chunk_ids: Sequence[int]) -> list[Passage]:
    """The assistant's chunks by id, in the order given; ids no longer stored are left out."""
    if not chunk_ids:
        return []
    marks = ",".join("?" * len(chunk_ids))
    rows = db.execute(
        "SELECT c.id, c.file_id, f.name, c.location, c.text FROM knowledge_chunks c "
        "JOIN knowledge_files f ON f.id = c.file_id "
        f"WHERE c.assistant_id = ? AND c.id IN ({marks})",
        [assistant_id, *chunk_ids],
    )
    found = {r[0]: Passage(r[0], r[1], r[2], r[3], r[4], None) for r in rows}
    return [found[i] for i in chunk_ids if i in found]
