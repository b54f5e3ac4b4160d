"""Which of an assistant's chunks answer a message best: hybrid retrieval, the nearest chunks by
meaning (cosine similarity) fused with the best matches by the words they share (BM25), both
searched exactly over the assistant's own chunks as held in memory (held.py).

Each ranking finds what the other misses: embeddings a question worded unlike its source, words
the rare terms an embedding blurs (a setting's name, a product code, a figure's label). The two
lists are fused by reciprocal rank (Cormack, Clarke and Büttcher, 2009): a chunk's fused score is
the sum over the lists it is in of 1 / (60 + its rank there), the constant of that paper; no
weights to tune and no score scales to reconcile. Every chunk returned keeps its cosine
similarity to the message, the score `min_score` reads and `knowledge search` shows.

BM25 (Robertson and Zaragoza, 2009) with its usual k1 = 1.2 and b = 0.75, the idf in the form
that never goes negative, log(1 + (N - n + 0.5) / (n + 0.5)); N and n count the assistant's own
chunks, so no other assistant's files weigh on its words. A word is a run of letters and digits,
case-folded, diacritics removed ("Café" finds "cafe"), as SQLite FTS5's unicode61 reads them.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from assistants.knowledge.held import Held

CANDIDATES = 20  # from each ranking before fusion (at least k)
RRF_K = 60
MAX_WORDS = 32  # of a message in the words ranking: the first distinct ones
K1, B = 1.2, 0.75
_WORD = re.compile(r"[^\W_]+")  # letters and digits: "_" and punctuation separate words


@dataclass(frozen=True)
class Ranked:
    chunk_id: int
    score: float  # cosine similarity to the message


def rank(held: Held, text: str, vector: np.ndarray, k: int) -> list[Ranked]:
    """The k chunks best for `text` (whose embedding is `vector`), best first."""
    depth = max(CANDIDATES, k)
    cosines = held.cosines(vector)
    nearest = [held.ids[row] for row in held.best_rows(cosines, depth)]
    fused: dict[int, float] = {}
    for ranking in (nearest, held.words.best(text, depth)):
        for position, chunk_id in enumerate(ranking, 1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + position)
    best = sorted(fused, key=lambda i: -fused[i])[:k]  # stable: the nearer first on a tie
    # A chunk with no vector (its index write still in flight, or lost until the start-up
    # repair) has no score for min_score to read, and is left out as the index alone leaves it.
    row_of = held.row_of
    return [Ranked(i, float(cosines[row_of[i]])) for i in best if i in row_of]


def words(text: str) -> list[str]:
    """A text's words as the words ranking reads them, in order."""
    return [_folded(w) for w in _WORD.findall(text.casefold())]


@functools.lru_cache(maxsize=100_000)
def _folded(word: str) -> str:
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class Words:
    """BM25 over one assistant's chunks: for each word, the chunks holding it and how often."""

    def __init__(self, chunk_ids: Sequence[int], texts: Sequence[str]) -> None:
        self.chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        rows: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        lengths = np.zeros(len(texts), dtype=np.float32)
        for row, text in enumerate(texts):
            found = Counter(words(text))
            lengths[row] = sum(found.values())
            for word, count in found.items():
                rows.setdefault(word, []).append(row)
                counts.setdefault(word, []).append(count)
        self._rows = {w: np.asarray(r, dtype=np.int32) for w, r in rows.items()}
        self._counts = {w: np.asarray(c, dtype=np.float32) for w, c in counts.items()}
        average = float(lengths.mean()) if len(texts) else 1.0
        self._norm = K1 * (1 - B + B * lengths / max(average, 1.0))  # per chunk, for BM25's tf

    @property
    def nbytes(self) -> int:
        """About what it holds in memory (arrays, and a word's entry in each table)."""
        arrays = sum(a.nbytes for a in self._rows.values()) * 2 + self._norm.nbytes
        return arrays + 200 * len(self._rows)

    def best(self, text: str, n: int) -> list[int]:
        """The ids of the n chunks that best match the text's words, best first (ties in the
        chunks' order); only chunks holding at least one of its words."""
        scores = np.zeros(len(self.chunk_ids), dtype=np.float32)
        total = len(self.chunk_ids)
        for word in list(dict.fromkeys(words(text)))[:MAX_WORDS]:
            rows = self._rows.get(word)
            if rows is None:
                continue
            idf = math.log(1 + (total - len(rows) + 0.5) / (len(rows) + 0.5))
            tf = self._counts[word]
            scores[rows] += idf * tf * (K1 + 1) / (tf + self._norm[rows])
        matched = np.flatnonzero(scores)
        order = matched[np.argsort(-scores[matched], kind="stable")][:n]
        return [int(i) for i in self.chunk_ids[order]]
