"""Shared fixtures: every test gets its own FEWTUNE_HOME; the embedding model loads once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True)
def fewtune_home(tmp_path, monkeypatch):
    """No test touches real state: FEWTUNE_HOME is a fresh temporary folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FEWTUNE_HOME", str(home))
    monkeypatch.delenv("FEWTUNE_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("FEWTUNE_CHROMA_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2, loaded once for the whole run."""
    from storage.embeddings import Embedder

    return Embedder()


@pytest.fixture
def core(fewtune_home, embedder):
    """A real core on real SQLite and chromadb in the test's FEWTUNE_HOME."""
    from assistants import Core

    opened = Core.open(fewtune_home, embedder=embedder)
    yield opened
    opened.close()
