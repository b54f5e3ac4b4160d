"""`assistant export|import` carry the knowledge: files and chunks as stored, embedded again on
import; a bad knowledge entry refuses the whole file and creates nothing."""

from __future__ import annotations

import json

import pytest
from knowledge_files import pdf
from test_cli import error_line, ok

from assistants import TERMINAL, FewtuneError, LimitExceeded

GUIDE = b"# Opening hours\nWe open at nine.\n\n# Refunds\nWithin thirty days.\n"


@pytest.fixture
def exported(core):
    core.assistants.create(TERMINAL, "helper", "Answer from the files.")
    core.examples.add(TERMINAL, "helper", "hi", "hello")
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE), ("manual.pdf", pdf(["Descale."]))])
    return core.api, json.dumps(_export(core))


def _export(core):
    from assistants.transfer import export_assistant

    return export_assistant(core, TERMINAL, "helper")


def test_export_then_import_carries_files_and_chunks(core, exported):
    from assistants.transfer import import_assistant

    data = json.loads(exported[1])
    assert [f["name"] for f in data["knowledge"]] == ["guide.md", "manual.pdf"]
    assert data["knowledge"][0]["chunks"][1] == {
        "location": "Refunds",
        "text": "Refunds\nWithin thirty days.",
    }
    copy, result = import_assistant(core, TERMINAL, exported[1].encode(), name="copy")
    assert result.added == 1
    before = core.knowledge.list(TERMINAL, "helper")
    after = core.knowledge.list(TERMINAL, "copy")
    assert [(f.name, f.kind, f.size, f.sha256, f.chunks) for f in after] == [
        (f.name, f.kind, f.size, f.sha256, f.chunks) for f in before
    ]
    best = core.knowledge.search(TERMINAL, "copy", "can I get a refund?", k=1)[0]
    assert (best.file.name, best.chunk.location) == ("guide.md", "Refunds")
    assert core.knowledge_index().count(copy.id) == 3


def test_a_file_from_before_knowledge_imports(core, exported):
    from assistants.transfer import import_assistant

    data = json.loads(exported[1])
    del data["knowledge"]
    copy, _ = import_assistant(core, TERMINAL, json.dumps(data).encode(), name="old")
    assert core.knowledge.list(TERMINAL, "old") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda k: k.clear() or k.append("x"), "Knowledge file 1 in the file is not an object"),
        (lambda k: k[0].update(name="guide.exe"), "guide.exe: fewtune reads"),
        (lambda k: k[0].update(kind="pdf"), r"\(guide\.md\) is not of kind 'pdf'"),
        (lambda k: k[1].update(sha256="nope"), r"\(manual\.pdf\) has no valid sha256"),
        (lambda k: k[1].update(chunks=[]), r"\(manual\.pdf\) has no chunks"),
        (lambda k: k[1]["chunks"][0].update(text=" "), "has a chunk without text"),
        (lambda k: k[1]["chunks"][0].update(text="word " * 300), "a chunk of 300 word pieces"),
        (
            lambda k: k[1].update(sha256=k[0]["sha256"]),
            r"manual\.pdf is given twice \(as guide\.md too\)",
        ),
    ],
)
def test_bad_knowledge_refuses_the_whole_file(core, exported, change, message):
    from assistants.transfer import import_assistant

    data = json.loads(exported[1])
    change(data["knowledge"])
    with pytest.raises(FewtuneError, match=message):
        import_assistant(core, TERMINAL, json.dumps(data).encode(), name="copy")
    assert [a.name for a in core.assistants.list(TERMINAL)] == ["helper"]


def test_knowledge_over_the_limit_deletes_the_imported_assistant(fewtune_home, embedder):
    from assistants import Core
    from assistants.transfer import export_assistant, import_assistant

    core = Core.open(fewtune_home, embedder=embedder)
    try:
        core.assistants.create(TERMINAL, "helper", "Answer.")
        core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
        data = json.dumps(export_assistant(core, TERMINAL, "helper")).encode()
    finally:
        core.close()
    (fewtune_home / "fewtune.toml").write_text("[knowledge]\nmax_chunks = 1\n")
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        with pytest.raises(LimitExceeded, match="would have 2 knowledge chunks; the limit is 1"):
            import_assistant(core, TERMINAL, data, name="copy")
        assert [a.name for a in core.assistants.list(TERMINAL)] == ["helper"]
        assert core.db.execute("SELECT count(*) FROM knowledge_files").fetchone()[0] == 1
    finally:
        core.close()


def test_the_cli_round_trip(cli, tmp_path):
    (tmp_path / "guide.md").write_bytes(GUIDE)
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    ok(cli("knowledge", "add", "helper", str(tmp_path / "guide.md")))
    out = tmp_path / "helper.json"
    ok(cli("assistant", "export", "helper", "-o", str(out)))
    assert ok(cli("assistant", "import", str(out), "--name", "copy")).splitlines() == [
        "Imported copy with 0 examples.",
        "Its knowledge: 1 file, 2 chunks.",
    ]
    data = json.loads(out.read_text())
    data["knowledge"][0]["kind"] = "csv"
    out.write_text(json.dumps(data))
    line = error_line(cli("assistant", "import", str(out), "--name", "bad"))
    assert "Knowledge file 1 in the file (guide.md) is not of kind 'csv'" in line
