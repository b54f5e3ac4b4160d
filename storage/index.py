"""The example index: one chromadb collection per assistant, derived from SQLite. The same
class holds each assistant's knowledge chunks, in collections of another prefix (`knowledge-`).

One collection per assistant rather than one shared collection with a `where` filter: measured
here, a filtered query over 100,000 vectors took about 84 ms p50, a per-assistant collection of
10,000 about 2.5 ms (docs/design.md, "SQLite is the truth"). It also makes "only the assistant's
own examples, ever" a property of the data layout rather than of a filter someone could forget.

The index holds only ids and vectors of example inputs (or chunks); texts stay in SQLite, the
truth.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from storage.batching import Batcher
from storage.embeddings import DIMENSION, Embedder
from storage.errors import FewtuneError
from storage.locks import file_lock
from storage.settings import IndexSettings, Settings

log = logging.getLogger(__name__)

_ADD_BATCH = 5000  # chromadb accepts at most a few thousand records a call


@dataclass(frozen=True)
class Hit:
    """One example (or knowledge chunk) found by a query: its id, cosine similarity and (when
    asked) its vector."""

    example_id: int
    score: float
    vector: np.ndarray | None = None


EXAMPLES = "assistant"  # collection names' prefixes: `assistant-7` holds assistant 7's examples
KNOWLEDGE = "knowledge"  # and `knowledge-7` its knowledge chunks


def collection_name(assistant_id: int, prefix: str = EXAMPLES) -> str:
    return f"{prefix}-{assistant_id}"


class IndexUnavailable(FewtuneError, RuntimeError):
    """The example index (embedded chromadb or a Chroma server) cannot be reached."""


class ExampleIndex:
    """Vectors of example inputs, per assistant, in embedded chromadb or a Chroma server;
    with `prefix=KNOWLEDGE`, vectors of knowledge chunks (ids are then chunk ids)."""

    def __init__(self, settings: Settings, embedder: Embedder, prefix: str = EXAMPLES) -> None:
        self.prefix = prefix
        self.settings: IndexSettings = settings.index
        self._path = settings.chroma_path
        self.embedder = embedder
        self._function: Any = None
        self._client: Any = None
        self._collections: dict[int, Any] = {}
        self._batchers: dict[tuple[int, int, bool], Batcher[np.ndarray, list[Hit]]] = {}
        self._batchers_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            from storage.chroma_embedding import MiniLMEmbeddingFunction

            self._function = MiniLMEmbeddingFunction(self.embedder)

            chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            try:
                if self.settings.chroma_url:
                    self._client = chromadb.HttpClient(
                        **_http_address(self.settings.chroma_url), settings=chroma_settings
                    )
                else:
                    # Two processes opening a new index folder at once both create chromadb's
                    # tables, and one fails ("table collections already exists"): one at a time.
                    with file_lock(self._path.with_name(f".{self._path.name}-open.lock")):
                        self._client = chromadb.PersistentClient(
                            path=str(self._path), settings=chroma_settings
                        )
            except Exception as exc:  # chromadb raises several kinds; all mean "not reachable"
                where = self.settings.chroma_url or str(self._path)
                raise IndexUnavailable(
                    f"The example index at {where} is unavailable: {exc}"
                ) from exc
        return self._client

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """A Chroma server that stops answering mid-session is unavailable, not a crash."""
        try:
            yield
        except httpx.TransportError as exc:
            raise IndexUnavailable(
                f"The example index at {self.settings.chroma_url} is unavailable: {exc}"
            ) from exc

    @contextmanager
    def _readable(self) -> Iterator[None]:
        """Embedded chromadb keeps each collection's state in the process that opened it, and a
        write by another process to the same folder can leave it unreadable here ("Error finding
        id") until this process opens the folder again: one sentence, not a traceback."""
        from chromadb.errors import ChromaError

        try:
            yield
        except ChromaError as exc:
            raise IndexUnavailable(
                f"The {self.prefix} index at {self.settings.chroma_url or self._path} could not be "
                f"read ({exc}); if another process changed it, restart this one, or keep the "
                "index in a Chroma server ([index] chroma_url) for several processes."
            ) from exc

    def _collection(self, assistant_id: int) -> Any:
        found = self._collections.get(assistant_id)
        if found is None:
            with self._answering():
                found = self._get_or_create(assistant_id)
            self._collections[assistant_id] = found
        return found

    def _get_or_create(self, assistant_id: int) -> Any:
        return self.client.get_or_create_collection(
            collection_name(assistant_id, self.prefix),
            embedding_function=self._function,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "ef_construction": self.settings.ef_construction,
                    "ef_search": self.settings.ef_search,
                    "max_neighbors": 32,
                }
            },
        )

    def add(
        self,
        assistant_id: int,
        ids: Sequence[int],
        texts: Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        """Index examples by id; embeds `texts` unless `vectors` are given. Re-adding an id updates it."""
        if not ids:
            return
        if vectors is None:
            if texts is None:
                raise ValueError("add needs texts or vectors")
            vectors = self.embedder.embed(list(texts))
        collection = self._collection(assistant_id)
        with self._answering():
            for start in range(0, len(ids), _ADD_BATCH):
                part = slice(start, start + _ADD_BATCH)
                collection.upsert(
                    ids=[str(i) for i in ids[part]], embeddings=np.asarray(vectors[part])
                )

    def delete(self, assistant_id: int, ids: Iterable[int]) -> None:
        keys = [str(i) for i in ids]
        if keys:
            collection = self._collection(assistant_id)
            with self._answering():
                collection.delete(ids=keys)

    def drop(self, assistant_id: int) -> None:
        """Remove an assistant's whole collection (the assistant was deleted)."""
        self._collections.pop(assistant_id, None)
        with self._batchers_lock:
            for key in [k for k in self._batchers if k[0] == assistant_id]:
                del self._batchers[key]
        try:
            self.client.delete_collection(collection_name(assistant_id, self.prefix))
        except Exception:  # chromadb raises NotFoundError/ValueError by version when it is absent
            log.debug("collection of assistant %s was already absent", assistant_id)

    def _pages(self, assistant_id: int, include: list[str]) -> Iterator[Any]:
        """The assistant's whole collection, a page of `collection.get` at a time."""
        collection = self._collection(assistant_id)
        offset, page = 0, 10_000
        while True:
            with self._answering():
                got = collection.get(include=include, limit=page, offset=offset)
            yield got
            if len(got["ids"]) < page:
                return
            offset += page

    def ids(self, assistant_id: int) -> set[int]:
        """Every example id in the assistant's collection (for repair)."""
        return {int(i) for got in self._pages(assistant_id, []) for i in got["ids"]}

    def everything(self, assistant_id: int) -> tuple[list[int], np.ndarray]:
        """Every id in the assistant's collection and its vector, one row each (float32)."""
        ids: list[int] = []
        rows: list[np.ndarray] = []
        with self._readable():
            for got in self._pages(assistant_id, ["embeddings"]):
                ids.extend(int(i) for i in got["ids"])
                if len(got["ids"]):
                    rows.append(np.asarray(got["embeddings"], dtype=np.float32))
        return ids, np.concatenate(rows) if rows else np.zeros((0, DIMENSION), np.float32)

    def count(self, assistant_id: int) -> int:
        collection = self._collection(assistant_id)
        with self._answering():
            return int(collection.count())

    def query(
        self, assistant_id: int, vector: np.ndarray, n: int, with_vectors: bool = False
    ) -> list[Hit]:
        """The n nearest examples of one assistant, best first. Concurrent queries alike
        (same assistant, n and fields) go to chromadb together, as one call."""
        if n <= 0:
            return []
        key = (assistant_id, n, with_vectors)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                work = functools.partial(self._query_many, assistant_id, n, with_vectors)
                batcher = self._batchers[key] = Batcher(work)
        return batcher(vector)

    def _query_many(
        self, assistant_id: int, n: int, with_vectors: bool, vectors: list[np.ndarray]
    ) -> list[list[Hit]]:
        include = ["distances", "embeddings"] if with_vectors else ["distances"]
        collection = self._collection(assistant_id)
        # No count() first: chromadb returns what it has when asked for more (one call, not two).
        with self._answering():
            got = collection.query(
                query_embeddings=[np.asarray(v, dtype=np.float32) for v in vectors],
                n_results=n,
                include=include,
            )
        found = []
        for row, ids in enumerate(got["ids"]):
            distances = got["distances"][row]
            found_vectors = got["embeddings"][row] if with_vectors else [None] * len(ids)
            found.append(
                [
                    Hit(int(i), 1.0 - float(d), None if v is None else np.asarray(v, np.float32))
                    for i, d, v in zip(ids, distances, found_vectors, strict=True)
                ]
            )
        return found

    def vectors(self, assistant_id: int, ids: Sequence[int]) -> dict[int, np.ndarray]:
        if not ids:
            return {}
        collection = self._collection(assistant_id)
        with self._answering():
            got = collection.get(ids=[str(i) for i in ids], include=["embeddings"])
        return {
            int(i): np.asarray(v, dtype=np.float32)
            for i, v in zip(got["ids"], got["embeddings"], strict=True)
        }


def _http_address(url: str) -> dict[str, Any]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise IndexUnavailable(f"index.chroma_url {url!r} must look like http://host:port.")
    return {
        "host": parsed.hostname,
        "port": parsed.port or (443 if parsed.scheme == "https" else 8000),
        "ssl": parsed.scheme == "https",
    }
