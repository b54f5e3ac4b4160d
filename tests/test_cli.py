"""The `fewtune` CLI as a user types it: in-process with typer's CliRunner (sharing the loaded
embedder), and a few end-to-end runs of the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEWTUNE = Path(sys.executable).parent / "fewtune"


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def error_line(result) -> str:
    """A user error: exit 1, nothing on stdout, exactly one line on stderr starting Error:."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert result.stdout == ""
    return lines[0]


def names(cli) -> list[str]:
    return [a["name"] for a in json.loads(ok(cli("assistant", "list", "--json")))]


# -- assistants --------------------------------------------------------------------------------


def test_coverage_is_a_selector_choice(cli):
    ok(cli("assistant", "create", "covering", "--instructions", "Digits.", "--selector=coverage"))
    assert json.loads(ok(cli("assistant", "show", "covering", "--json")))["selector"] == "coverage"
    ok(cli("assistant", "edit", "covering", "--selector", "mmr"))
    ok(cli("assistant", "edit", "covering", "--selector", "coverage"))
    bad = cli("assistant", "edit", "covering", "--selector", "best")
    assert bad.exit_code != 0 and "coverage" in bad.output


def test_create_show_list_edit_delete(cli):
    assert json.loads(ok(cli("assistant", "list", "--json"))) == []
    assert "No assistants yet" in ok(cli("assistant", "list"))
    out = ok(
        cli(
            "assistant", "create", "helper", "--instructions", "Answer briefly.",
            "--description", "A test.", "--k", "6", "--selector", "mmr",
            "--model", "openai:gpt-4o-mini", "--temperature", "0.2", "--starter", "Hi?",
        )
    )  # fmt: skip
    assert "Created helper" in out
    shown = json.loads(ok(cli("assistant", "show", "helper", "--json")))
    assert shown["name"] == "helper"
    assert shown["instructions"] == "Answer briefly."
    assert (shown["k"], shown["selector"], shown["model"]) == (6, "mmr", "openai:gpt-4o-mini")
    assert shown["temperature"] == 0.2
    assert shown["starters"] == ["Hi?"]
    assert shown["examples"] == 0
    text = ok(cli("assistant", "show", "HELPER"))
    assert "Answer briefly." in text and "k: 6" in text

    assert "version 2" in ok(cli("assistant", "edit", "helper", "--k", "2", "--selector", "fixed"))
    ok(cli("assistant", "edit", "helper", "--rename", "Helper2"))
    shown = json.loads(ok(cli("assistant", "show", "helper2", "--json")))
    assert (shown["name"], shown["k"], shown["selector"], shown["version"]) == (
        "Helper2",
        2,
        "fixed",
        3,
    )
    history = json.loads(ok(cli("assistant", "history", "helper2", "--json")))
    assert [v["change"] for v in history] == ["create", "edit", "edit"]
    ok(cli("assistant", "restore", "helper2", "1"))
    assert json.loads(ok(cli("assistant", "show", "helper", "--json")))["k"] == 6

    ok(cli("assistant", "create", "other", "--instructions", "x"))
    listed = json.loads(ok(cli("assistant", "list", "--json")))
    assert [a["name"] for a in listed] == ["helper", "other"]
    assert {"name", "instructions", "k", "selector", "model"} <= set(listed[0])

    line = error_line(cli("assistant", "delete", "helper"))
    assert "--yes" in line
    assert names(cli) == ["helper", "other"]
    assert "Deleted helper" in ok(cli("assistant", "delete", "helper", "--yes"))
    assert names(cli) == ["other"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("assistant", "show", "nope"), "No assistant called 'nope'"),
        (("assistant", "edit", "nope", "--k", "3"), "No assistant called 'nope'"),
        (("assistant", "delete", "nope", "--yes"), "No assistant called 'nope'"),
        (("example", "list", "nope"), "No assistant called 'nope'"),
        (("example", "add", "nope", "--input", "a", "--output", "b"), "No assistant"),
        (("example", "search", "nope", "query"), "No assistant"),
        (("assistant", "create", "bad name", "--instructions", "x"), "is not valid"),
        (("assistant", "create", "new", "--instructions", "x", "--k", "26"), "0 to 25"),
        (("assistant", "create", "new", "--instructions", "x", "--k", "-1"), "0 to 25"),
        (("assistant", "create", "new", "--instructions", "x", "--model", "zz:m"), "provider"),
        (("assistant", "create", "new", "--instructions", "x", "--temperature", "3"), "0 to 2"),
        (("assistant", "create", "new", "--instructions", "  "), "empty"),
        (("assistant", "create", "HELPER", "--instructions", "x"), "already exists"),
        (("assistant", "edit", "helper", "--k", "99"), "0 to 25"),
        (("assistant", "edit", "helper"), "Nothing to change"),
        (("assistant", "restore", "helper", "7"), "no version 7"),
        (("example", "remove", "helper", "12345"), "no example #12345"),
        (("example", "search", "helper", "q", "-k", "0"), "-k"),
        (("example", "import", "helper", "/no/such/file.jsonl"), "Cannot read"),
    ],
)
def test_user_errors_print_one_line_and_change_nothing(cli, args, message):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer.", "--k", "4"))
    before = ok(cli("assistant", "show", "helper", "--json"))
    line = error_line(cli(*args))
    assert message in line
    assert names(cli) == ["helper"]
    assert ok(cli("assistant", "show", "helper", "--json")) == before


def test_a_broken_settings_file_is_one_line(cli, fewtune_home):
    (fewtune_home / "fewtune.toml").write_text("[index\n")
    assert "not valid TOML" in error_line(cli("assistant", "list"))


# -- examples ----------------------------------------------------------------------------------


def test_examples_add_list_search_remove(cli):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    for text, label in [
        ("The cat is sleeping on the sofa.", "cat"),
        ("Stock markets fell sharply today.", "finance"),
        ("How do I bake sourdough bread?", "baking"),
    ]:
        assert "Added example" in ok(
            cli("example", "add", "helper", "--input", text, "--output", label)
        )
    listed = json.loads(ok(cli("example", "list", "helper", "--json")))
    assert [(e["input"], e["output"]) for e in listed][1] == (
        "Stock markets fell sharply today.",
        "finance",
    )
    assert all(isinstance(e["id"], int) for e in listed)

    found = json.loads(
        ok(cli("example", "search", "helper", "a kitten napping on the couch", "-k", "3", "--json"))
    )
    assert [e["output"] for e in found][0] == "cat"
    assert {"id", "input", "output", "score"} <= set(found[0])
    scores = [e["score"] for e in found]
    assert scores == sorted(scores, reverse=True)
    assert "cat" in ok(cli("example", "search", "helper", "kitten"))

    assert "Removed example" in ok(cli("example", "remove", "helper", str(found[0]["id"])))
    left = json.loads(ok(cli("example", "list", "helper", "--json")))
    assert found[0]["id"] not in [e["id"] for e in left]
    assert json.loads(ok(cli("assistant", "show", "helper", "--json")))["examples"] == 2
    assert "Reindexed 2 examples." in ok(cli("reindex"))
    again = json.loads(ok(cli("example", "search", "helper", "kitten", "--json")))
    assert len(again) == 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_import_round_trip(cli, tmp_path, fmt):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    ok(cli("assistant", "create", "copy", "--instructions", "Answer."))
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"input": "one, with a comma", "output": "1"}\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "two"},'
        ' {"role": "assistant", "content": "2"}]}\n'
        '{"input": "one, with a comma", "output": "1"}\n',
        encoding="utf-8",
    )
    assert "Imported 2 examples into helper (1 duplicates skipped)" in ok(
        cli("example", "import", "helper", str(source))
    )
    exported = ok(cli("example", "export", "helper", "--format", fmt))
    if fmt == "csv":
        assert exported == 'input,output\n"one, with a comma",1\ntwo,2\n'
    else:
        assert [json.loads(line) for line in exported.splitlines()] == [
            {"input": "one, with a comma", "output": "1"},
            {"input": "two", "output": "2"},
        ]
    target = tmp_path / f"out.{fmt}"
    result = cli("example", "export", "helper", "--format", fmt, "--output", str(target))
    assert result.exit_code == 0
    assert "Wrote 2 examples" in result.stderr
    assert target.read_text(encoding="utf-8") == exported
    assert "Imported 2 examples into copy" in ok(cli("example", "import", "copy", str(target)))

    def listed(name: str) -> list[tuple[str, str]]:
        found = json.loads(ok(cli("example", "list", name, "--json")))
        return [(e["input"], e["output"]) for e in found]

    assert listed("copy") == listed("helper")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n{broken\n', "Line 3"),
        (b"hello,world\n", "Line 1"),
        ("input,output\ncaf\u00e9,ok\n".encode("latin-1"), "not UTF-8"),
        (b"\x00\x01\x02binary", "not a text file"),
        (b"", "holds no examples"),
    ],
)
def test_a_bad_file_is_one_line_and_imports_nothing(cli, tmp_path, content, message):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    ok(cli("example", "add", "helper", "--input", "kept", "--output", "yes"))
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert message in error_line(cli("example", "import", "helper", str(path)))
    listed = json.loads(ok(cli("example", "list", "helper", "--json")))
    assert [(e["input"], e["output"]) for e in listed] == [("kept", "yes")]


def test_a_directory_is_not_an_import_file(cli, tmp_path):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    assert "Cannot read" in error_line(cli("example", "import", "helper", str(tmp_path)))


def test_demo_no_chat_sets_up_the_demo_once(cli):
    out = ok(cli("demo", "--no-chat"))
    assert "Demo assistant 'numbers' is ready" in out
    count = json.loads(ok(cli("assistant", "show", "numbers", "--json")))["examples"]
    assert count >= 100
    assert f"({count} examples)" in ok(cli("demo", "--no-chat"))  # idempotent
    assert names(cli) == ["numbers", "numbers-tuned"]


# -- the real console script -----------------------------------------------------------------


def fewtune(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [str(FEWTUNE)] if FEWTUNE.exists() else [sys.executable, "-m", "bot.cli"]
    env = {**os.environ, "FEWTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_console_script_shows_and_refuses(cli, fewtune_home):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer.", "--k", "3"))
    shown = fewtune(fewtune_home, "assistant", "show", "helper", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["name"], data["instructions"], data["k"]) == ("helper", "Answer.", 3)
    assert (data["selector"], data["model"]) == ("similarity", "local:SmolLM2-135M-Instruct")

    failed = fewtune(fewtune_home, "assistant", "create", "Helper", "--instructions", "x")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    lines = failed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "already exists" in lines[0]


@pytest.mark.slow  # two processes that each load the embedder: about 45 s on a busy 2-core box
def test_console_script_demo_then_search(fewtune_home):
    demo = fewtune(fewtune_home, "demo", "--no-chat")
    assert demo.returncode == 0, demo.stderr
    assert "Demo assistant 'numbers' is ready" in demo.stdout
    found = fewtune(
        fewtune_home, "example", "search", "numbers", "quarantadue", "--json", "-k", "3"
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert (hits[0]["input"], hits[0]["output"]) == ("quarantadue", "42")
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_export_to_a_file_counts_examples_not_lines(cli, tmp_path):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    ok(cli("example", "add", "helper", "--input", "two\nlines", "--output", "and\nmore\nlines"))
    for fmt in ("csv", "jsonl"):
        target = tmp_path / f"out.{fmt}"
        result = cli("example", "export", "helper", "--format", fmt, "--output", str(target))
        assert result.exit_code == 0
        assert "Wrote 1 examples" in result.stderr, fmt


def test_the_cli_opens_its_core_through_the_factory_it_is_given(embedder):
    from typer.testing import CliRunner

    from assistants import Core
    from bot.cli import app

    opened: list[Core] = []

    def factory() -> Core:
        opened.append(Core.open(embedder=embedder))
        return opened[-1]

    result = CliRunner().invoke(app, ["assistant", "list"], obj=factory)
    assert result.exit_code == 0, result.output
    assert len(opened) == 1 and opened[0].embedder is embedder
