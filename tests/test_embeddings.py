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
