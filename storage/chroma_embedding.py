"""chromadb's view of the offline embedder, so a collection never falls back to chromadb's
default embedding function (which downloads its model). Imported only when the index opens:
chromadb takes seconds to import, and most commands never touch the index."""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from storage.embeddings import Embedder


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """The offline all-MiniLM-L6-v2 as a chromadb embedding function."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder or Embedder()

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "fewtune-minilm"

    def default_space(self):  # type: ignore[override]
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction()
