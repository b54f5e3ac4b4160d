"""The offline embedder: normalised vectors, similar texts close, concurrent calls batched."""

from __future__ import annotations

import threading

import numpy as np


def test_vectors_are_normalised_and_meaningful(embedder):
    vectors = embedder.embed(["forty-two", "quarante-deux", "the weather is nice today"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_concurrent_single_calls_match_one_batch(embedder):
    texts = ["alpha", "beta gamma delta", "quarante", "восемьдесят два"] * 4
    expected = {t: v for t, v in zip(texts, embedder.embed(texts), strict=True)}
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(texts))

    def call(i: int) -> None:
        start.wait()
        results[i] = embedder.embed_one(texts[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, text in enumerate(texts):
        assert np.allclose(results[i], expected[text], atol=1e-5), text


def test_an_empty_list_embeds_to_nothing(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_the_onnx_graph_runs_by_default_and_matches_torch(embedder):
    from storage.embeddings import Embedder

    texts = ["forty-two", "quatre-vingt-dix-sept", "восемьдесят два", "word " * 400, "🎉"]
    fast = embedder.embed(texts)
    assert embedder.backend_used == "onnx"  # onnx and onnxruntime are dependencies: never torch
    reference = Embedder(backend="torch")
    assert np.allclose(fast, reference.embed(texts), atol=1e-5)
    assert reference.backend_used == "torch"


def test_a_batch_of_mixed_lengths_keeps_its_order(embedder):
    texts = ["a much longer text about the weather in spring", "x", "medium length text", "y z"]
    together = embedder.embed(texts)
    for text, vector in zip(texts, together, strict=True):
        assert np.allclose(vector, embedder.embed([text])[0], atol=1e-5), text


def test_embedding_does_not_load_torch_into_the_process(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from storage.embeddings import Embedder; e = Embedder(); e.embed(['hi']); "
        "print(e.backend_used, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["onnx", "False"]


def test_exporting_from_a_folder_without_a_model_fails_cleanly(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "graph.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "storage.onnx_export", str(tmp_path), str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and not out.exists()
