"""The example index in a Chroma server (`chroma run` on loopback) through the HTTP client."""

from __future__ import annotations

import pytest

from assistants import TERMINAL
from storage.index import IndexUnavailable


def test_examples_go_to_a_chroma_server_over_http(chroma_server, chroma_core, fewtune_home):
    url, process = chroma_server
    core = chroma_core
    assert core.settings.index.chroma_url == url
    assert type(core.index().client).__name__ != "PersistentClient"
    core.assistants.create(TERMINAL, "helper", "Answer.")
    core.examples.add(TERMINAL, "helper", "The cat is sleeping on the sofa.", "cat")
    result = core.examples.import_data(
        TERMINAL,
        "helper",
        "x.jsonl",
        b'{"input": "Stock markets fell sharply.", "output": "finance"}\n'
        b'{"input": "How do I bake bread?", "output": "baking"}\n',
    )
    assert result.added == 2
    found = core.examples.search(TERMINAL, "helper", "a kitten napping on the couch", 3)
    assert [e.output for e, _ in found][0] == "cat"
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assistant_id = core.assistants.get(TERMINAL, "helper").id
    assert core.index().count(assistant_id) == 3
    # Nothing was written to an embedded index under FEWTUNE_HOME.
    assert not (fewtune_home / "chroma").exists()
    assert core.reindex() == 3
    core.assistants.delete(TERMINAL, "helper")
    names = {c.name for c in core.index().client.list_collections()}
    assert f"assistant-{assistant_id}" not in names

    # The server goes away: writes are refused in one sentence and leave nothing behind.
    core.assistants.create(TERMINAL, "after", "Answer.")
    process.terminate()
    process.wait(timeout=10)
    with pytest.raises(IndexUnavailable, match="unavailable"):
        core.examples.add(TERMINAL, "after", "hello", "hi")
    assert core.examples.count(TERMINAL, "after") == 0


def test_the_environment_overrides_the_file(fewtune_home, monkeypatch):
    (fewtune_home / "fewtune.toml").write_text('[index]\nchroma_url = "http://127.0.0.1:1"\n')
    monkeypatch.setenv("FEWTUNE_CHROMA_URL", "http://127.0.0.1:2")
    from storage.settings import load_settings

    assert load_settings(fewtune_home).index.chroma_url == "http://127.0.0.1:2"
