"""Shared fixtures: every test gets its own FEWTUNE_HOME; the embedding model loads once; `cli`
runs the CLI in-process on that embedder. The Discord world's fixtures (`world`, `model`,
`serve_url`) are a plugin, so test files name them as parameters without importing them."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["discord_fake.world", "chroma_fixtures"]

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


@pytest.fixture
def cli(embedder):
    """Run `fewtune ARGS...` in-process; every Core it opens shares the session's embedder
    (passed through the CLI's seam, the click context's `obj`)."""
    from typer.testing import CliRunner

    from assistants import Core
    from bot.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(
            app,
            list(args),
            input=input,
            obj=lambda: Core.open(embedder=embedder),
            catch_exceptions=False,
        )

    return invoke
