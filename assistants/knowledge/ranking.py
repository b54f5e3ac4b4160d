"""Which of an assistant's chunks answer a message best: hybrid retrieval, the nearest chunks by
meaning (the knowledge index's cosine similarity) fused with the best matches by the words they
share (SQLite FTS5's BM25 over `knowledge_words`, storage/db.py m011).

Each ranking finds what the other misses: embeddings a question worded unlike its source, words
the rare terms an embedding blurs (a setting's name, a product code, a figure's label). The two
lists are fused by reciprocal rank (Cormack, Clarke and Büttcher, 2009): a chunk's fused score is
the sum over the lists it is in of 1 / (60 + its rank there), the constant of that paper; no
weights to tune and no score scales to reconcile. Every chunk returned keeps its cosine
similarity to the message, the score `min_score` reads and `knowledge search` shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from storage.index import ExampleIndex

CANDIDATES = 20  # from each ranking before fusion (at least k)
RRF_K = 60
MAX_WORDS = 32  # of a message in the words query: the first distinct ones
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Ranked:
    chunk_id: int
    score: float  # cosine similarity to the message


def rank(
    db: Database,
    index: ExampleIndex,
    assistant_id: int,
    text: str,
    vector: np.ndarray,
    k: int,
) -> list[Ranked]:
    """The k chunks best for `text` (whose embedding is `vector`), best first."""
    depth = max(CANDIDATES, k)
    nearest = index.query(assistant_id, vector, depth)
    cosine = {h.example_id: h.score for h in nearest}  # a knowledge index's ids are chunk ids
    fused: dict[int, float] = {}
    for ranking in ([h.example_id for h in nearest], word_matches(db, assistant_id, text, depth)):
        for position, chunk_id in enumerate(ranking, 1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + position)
    best = sorted(fused, key=lambda i: -fused[i])[:k]  # stable: the nearer first on a tie
    unscored = [i for i in best if i not in cosine]
    query = np.asarray(vector, dtype=np.float32)
    for chunk_id, found in index.vectors(assistant_id, unscored).items():
        cosine[chunk_id] = float(found @ query)
    # A chunk with no vector (its index write still in flight, or lost until the start-up
    # repair) has no score for min_score to read, and is left out as the index alone leaves it.
    return [Ranked(i, cosine[i]) for i in best if i in cosine]


def words_query(text: str) -> str | None:
    """An FTS5 query for any of the message's words (each quoted, so no word is an operator),
    or None when it has none."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_WORDS]
    return " OR ".join(f'"{w}"' for w in words) or None


def word_matches(db: Database, assistant_id: int, text: str, n: int) -> list[int]:
    """The ids of the assistant's n chunks that best match the message's words (BM25)."""
    words = words_query(text)
    if words is None:
        return []
    rows = db.execute(
        "SELECT rowid FROM knowledge_words WHERE knowledge_words MATCH ? "
        "ORDER BY bm25(knowledge_words, 1.0, 0.0) LIMIT ?",
        [f"owner:a{assistant_id} AND ({words})", n],
    )
    return [int(r[0]) for r in rows]
