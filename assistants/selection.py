"""Which examples go in the prompt: similarity, MMR, coverage, random (seeded per conversation)
or fixed.

Only the assistant's own examples are ever candidates: each assistant has its own index
collection, and ids are read back from SQLite filtered by the assistant again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from assistants.coverage import cover, features
from storage.index import Hit


@dataclass(frozen=True)
class Selection:
    """Example ids in rank order (best first) and, for similarity/MMR/coverage, their cosine
    scores."""

    ids: list[int]
    scores: list[float | None]


class Nearest(Protocol):
    """What finds an assistant's nearest examples: the index (`ExampleIndex`) or its copy in
    memory (`storage.held.HeldExamples`)."""

    def query(
        self, assistant_id: int, vector: np.ndarray, n: int, with_vectors: bool = False
    ) -> list[Hit]: ...


MMR_LAMBDA = 0.5  # relevance vs diversity; 1.0 is plain similarity
MMR_FETCH_FACTOR = 4  # candidates fetched per example wanted
COVERAGE_SHORTLIST = 32  # nearest examples the coverage set is built from (docs/design.md)
NEEDS_QUERY = ("similarity", "mmr", "coverage")  # the selectors that need the message's vector


def select(
    selector: str,
    index: Nearest,
    assistant_id: int,
    k: int,
    query: np.ndarray | None,
    all_ids: list[int] | None = None,
    seed: int = 0,
    exclude: frozenset[int] = frozenset(),
    text: str = "",
    inputs: Callable[[list[int]], dict[int, str]] | None = None,
) -> Selection:
    """Pick k example ids. `query` (the message's vector) is needed by similarity, MMR and
    coverage; `all_ids` (in id order) by random and fixed; coverage also needs the message's
    `text` and `inputs`, which gives the input texts of example ids. `exclude`d ids are never
    picked (evaluation keeps held-out examples out of the prompt)."""
    if k <= 0:
        return Selection([], [])
    if selector in NEEDS_QUERY:
        assert query is not None
        if selector == "coverage":
            assert inputs is not None
            hits = index.query(assistant_id, query, max(COVERAGE_SHORTLIST, k) + len(exclude))
            hits = [h for h in hits if h.example_id not in exclude]
            texts = inputs([h.example_id for h in hits])
            hits = [h for h in hits if h.example_id in texts]
            order = cover(features(text), [features(texts[h.example_id]) for h in hits], k)
            return Selection([hits[i].example_id for i in order], [hits[i].score for i in order])
        if selector == "similarity":
            hits = index.query(assistant_id, query, k + len(exclude))
            hits = [h for h in hits if h.example_id not in exclude][:k]
            return Selection([h.example_id for h in hits], [h.score for h in hits])
        fetch = max(k * MMR_FETCH_FACTOR, 20) + len(exclude)
        hits = index.query(assistant_id, query, fetch, with_vectors=True)
        hits = [h for h in hits if h.example_id not in exclude]
        order = mmr([h.vector for h in hits], [h.score for h in hits], k, MMR_LAMBDA)  # type: ignore[misc]
        return Selection([hits[i].example_id for i in order], [hits[i].score for i in order])
    ids = [i for i in all_ids or [] if i not in exclude]
    if selector == "fixed":
        chosen = ids[:k]
    elif selector == "random":
        chosen = random.Random(seed).sample(ids, min(k, len(ids)))
    else:
        raise ValueError(f"unknown selector {selector!r}")
    return Selection(chosen, [None] * len(chosen))


def mmr(vectors: list[np.ndarray], scores: list[float], k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: greedily take the candidate most relevant to the query and
    least like those already taken. Returns positions into the candidate lists."""
    if not vectors:
        return []
    matrix = np.stack(vectors)
    relevance = np.asarray(scores, dtype=np.float32)
    chosen: list[int] = [int(np.argmax(relevance))]
    redundancy = matrix @ matrix[chosen[0]]
    while len(chosen) < min(k, len(vectors)):
        value = lam * relevance - (1 - lam) * redundancy
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        redundancy = np.maximum(redundancy, matrix @ matrix[best])
    return chosen
