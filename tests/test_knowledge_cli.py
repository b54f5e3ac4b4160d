"""`fewtune knowledge add|list|remove|search` as a user types them: true output, `--json`, and
every refusal one `Error:` line with exit 1 that changes nothing."""

from __future__ import annotations

import json

import pytest
from knowledge_files import pdf
from test_cli import error_line, ok

GUIDE = "# Opening hours\nWe open at nine and close at five.\n\n# Refunds\nWithin thirty days.\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "guide.md").write_text(GUIDE)
    (tmp_path / "manual.pdf").write_bytes(pdf(["Descale the machine monthly."]))
    (tmp_path / "scan.pdf").write_bytes(pdf([None]))
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    return tmp_path


def listed(cli) -> list[dict]:
    return json.loads(ok(cli("knowledge", "list", "helper", "--json")))


def test_add_list_search_remove(cli, files):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer from the files."))
    assert "helper has no knowledge files" in ok(cli("knowledge", "list", "helper"))
    out = ok(cli("knowledge", "add", "helper", str(files / "guide.md"), str(files / "manual.pdf")))
    lines = out.splitlines()
    assert lines[0] == "Added guide.md to helper as file 1 (2 chunks)."
    assert lines[1] == "Added manual.pdf to helper as file 2 (1 chunk)."

    data = listed(cli)
    assert [(f["id"], f["name"], f["kind"], f["chunks"]) for f in data] == [
        (1, "guide.md", "md", 2),
        (2, "manual.pdf", "pdf", 1),
    ]
    assert set(data[0]) == {
        "id",
        "name",
        "kind",
        "size",
        "sha256",
        "chunks",
        "added_by",
        "added_at",
    }
    assert data[0]["size"] == len(GUIDE.encode())
    text = ok(cli("knowledge", "list", "helper")).splitlines()
    assert text[0].split()[:6] == ["1", "guide.md", "md", str(len(GUIDE)), "B", "2"]

    found = json.loads(
        ok(cli("knowledge", "search", "helper", "can I get my money back?", "-k", "2", "--json"))
    )
    assert [f["rank"] for f in found] == [1, 2]
    assert (found[0]["file"], found[0]["location"]) == ("guide.md", "Refunds")
    assert found[0]["text"] == "Refunds\nWithin thirty days."
    assert {"file", "file_id", "chunk", "position", "score", "text"} <= set(found[0])
    assert found[0]["score"] >= found[1]["score"]
    shown = ok(cli("knowledge", "search", "helper", "descaling", "-k", "1")).splitlines()
    assert shown[0].startswith("1. ") and "manual.pdf, page 1 (chunk" in shown[0]
    assert shown[1].strip() == "Descale the machine monthly."

    assert (
        ok(cli("knowledge", "remove", "helper", "1")) == "Removed guide.md (file 1) from helper.\n"
    )
    assert [f["name"] for f in listed(cli)] == ["manual.pdf"]
    assert ok(cli("reindex")).splitlines() == [
        "Reindexed 0 examples.",
        "Reindexed 1 knowledge chunk.",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("knowledge", "add", "helper", "{scan.pdf}"), "scan.pdf has no text layer"),
        (("knowledge", "add", "helper", "{notes.docx}"), "notes.docx: fewtune reads .txt"),
        (("knowledge", "add", "helper", "{guide.md}", "{guide.md}"), "guide.md is given twice"),
        (("knowledge", "add", "helper", "{manual.pdf}"), "manual.pdf is already in 'helper'"),
        (("knowledge", "add", "helper", "{missing.md}"), "Cannot read"),
        (("knowledge", "add", "helper", "{dir}"), "Cannot read"),
        (("knowledge", "add", "helper"), "Missing argument"),
        (("knowledge", "add", "nope", "{guide.md}"), "No assistant called 'nope'"),
        (("knowledge", "list", "nope"), "No assistant called 'nope'"),
        (("knowledge", "remove", "helper", "99"), "'helper' has no knowledge file #99"),
        (("knowledge", "remove", "helper", "x"), "should be a valid integer"),
        (("knowledge", "search", "helper", "tea", "-k", "0"), "-k must be from 1 to 100"),
        (("knowledge", "search", "helper", " "), "The search query is empty"),
    ],
)
def test_errors_are_one_line_and_change_nothing(cli, files, args, message):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    ok(cli("knowledge", "add", "helper", str(files / "manual.pdf")))
    (files / "dir").mkdir()
    before = listed(cli)
    line = error_line(cli(*[str(files / a[1:-1]) if a.startswith("{") else a for a in args]))
    assert message in line, line
    assert listed(cli) == before


def test_a_bad_file_among_good_ones_adds_none(cli, files):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    line = error_line(
        cli("knowledge", "add", "helper", str(files / "guide.md"), str(files / "scan.pdf"))
    )
    assert line == (
        "Error: scan.pdf has no text layer (a scanned PDF?); run OCR on it or add its text instead."
    )
    assert listed(cli) == []
