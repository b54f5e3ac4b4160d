"""Bad input at the CLI, as a hostile or careless user types it (issue 12): every case is one
`Error:` line, exit 1, no traceback, and nothing stored."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from test_cli import error_line, fewtune, names, ok

from assistants import TERMINAL
from assistants.example_files import ExampleData
from assistants.examples import content_hash

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5_000


def count(cli, name: str) -> int:
    return json.loads(ok(cli("assistant", "show", name, "--json")))["examples"]


def rows(fewtune_home, table: str) -> int:
    with sqlite3.connect(fewtune_home / "fewtune.db") as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def bundle(instructions: str = "Digits.", examples: list | None = None) -> dict:
    return {
        "format": "fewtune-assistant",
        "version": 1,
        "assistant": {"name": "imported", "instructions": instructions},
        "examples": examples if examples is not None else [{"input": "one", "output": "1"}],
    }


@pytest.fixture
def target(cli):
    ok(cli("assistant", "create", "imp", "--instructions", "Digits.", "--model", "local:x"))
    return "imp"


# -- import files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, reason",
    [
        (DEEP, "nested too deeply"),
        ('{"input": "one", "output": ' + HUGE + "}", "number too long"),
        ('{"input": "\\ud800", "output": "x"}', 'Line 1: "input": character 1 (U+D800)'),
        ('{"messages": [{"role": "user", "content": "a\\udfff"}, '
         '{"role": "assistant", "content": "b"}]}', "messages[0].content: character 2"),
    ],
)  # fmt: skip
def test_example_import_refuses_in_one_line(cli, target, tmp_path, line, reason):
    file = tmp_path / "bad.jsonl"
    file.write_text(line + "\n", encoding="utf-8")
    assert reason in error_line(cli("example", "import", target, str(file)))
    assert count(cli, target) == 0


@pytest.mark.parametrize(
    "text, reason",
    [
        (DEEP, "nested too deeply"),
        (json.dumps(bundle())[:-1] + ', "extra": ' + HUGE + "}", "number too long"),
        (json.dumps(bundle(instructions="a\ud800")), "The instructions: character 2 (U+D800)"),
        (json.dumps(bundle(examples=[{"input": "\udcff", "output": "x"}])), 'Line 1: "input"'),
    ],
)
def test_assistant_import_refuses_in_one_line(cli, tmp_path, text, reason):
    file = tmp_path / "bad.json"
    file.write_text(text, encoding="utf-8")
    assert reason in error_line(cli("assistant", "import", str(file)))
    assert names(cli) == []


# -- text that is not valid UTF-8 ---------------------------------------------------------------

# What Python makes of `$'\xed\xa0\x80'` and `$'abc\xff'` in argv (surrogateescape).
NOT_UTF8 = "\udced\udca0\udc80"


@pytest.mark.parametrize(
    "args, field",
    [
        (["example", "add", "imp", "--input", NOT_UTF8, "--output", "x"], "The example's input"),
        (["example", "add", "imp", "--input", "x", "--output", "y\udcff"], "The example's output"),
        (["assistant", "create", "bu", "--instructions", "abc\udcff"], "The instructions"),
        (["assistant", "create", "bu", "--instructions", "a", "--description", "\udcff"],
         "The description"),
        (["assistant", "create", "bu", "--instructions", "a", "--starter", "\udcff"],
         "A conversation starter"),
        (["assistant", "edit", "imp", "--instructions", "abc\udcff"], "The instructions"),
        (["ask", "imp", "hi\udcff"], "The message"),
        (["example", "search", "imp", "q\udcff"], "The search query"),
        (["ask", "\udcff", "hi"], "No assistant called"),
    ],
)  # fmt: skip
def test_arguments_not_utf8_are_refused_naming_the_field(cli, target, fewtune_home, args, field):
    assert field in error_line(cli(*args))
    assert names(cli) == ["imp"]
    assert count(cli, target) == 0
    assert rows(fewtune_home, "conversations") == 0
    assert rows(fewtune_home, "assistant_versions") == 1


def test_real_argv_bytes_not_utf8(cli, target, fewtune_home):
    """The real console script, handed bytes that are not UTF-8 as the shell passes them."""
    for args in (
        ["example", "add", "imp", "--input", b"\xed\xa0\x80", "--output", "x"],
        ["ask", "imp", b"hi\xff"],
    ):
        run = fewtune(fewtune_home, *args)  # type: ignore[arg-type]
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1
        assert "not valid UTF-8 text" in run.stderr
    assert count(cli, target) == 0
    assert rows(fewtune_home, "conversations") == 0


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\r"])
def test_export_then_import_round_trips_line_separators(cli, target, tmp_path, separator):
    ok(cli("example", "add", target, "--input", f"one{separator}two", "--output", f"1{separator}2"))
    exported = tmp_path / "examples.jsonl"
    ok(cli("example", "export", target, "-o", str(exported)))
    ok(cli("assistant", "create", "copy", "--instructions", "Digits.", "--model", "local:x"))
    assert "Imported 1 examples" in ok(cli("example", "import", "copy", str(exported)))
    listed = json.loads(ok(cli("example", "list", "copy", "--json")))
    assert [(e["input"], e["output"]) for e in listed] == [(f"one{separator}two", f"1{separator}2")]

    whole = tmp_path / "assistant.json"
    ok(cli("assistant", "export", target, "-o", str(whole)))
    assert "with 1 examples" in ok(cli("assistant", "import", str(whole), "--name", "again"))


# -- the same file imported twice at once ---------------------------------------------------------


def test_a_row_another_process_stored_meanwhile_counts_as_a_duplicate(core, tmp_path):
    """A second process (its own connection, not our lock) stores line 1 while our import runs:
    our INSERT waits for its transaction, then finds the row there. One import wins each row;
    the other counts it as a duplicate instead of dying on the UNIQUE constraint."""
    assistant = core.assistants.create(TERMINAL, "imp", "Digits.", model="local:x")
    lines = [{"input": f"number {i}", "output": str(i)} for i in range(20)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    other = sqlite3.connect(core.settings.db_path, timeout=30, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute(
        "INSERT INTO examples (assistant_id, input, output, source, author_id, content_hash,"
        " created_at) VALUES (?, 'number 0', '0', 'import', 'other', ?, '2026-01-01')",
        [assistant.id, content_hash(ExampleData("number 0", "0"))],
    )
    outcome: dict = {}

    def ours() -> None:
        try:
            outcome["result"] = core.examples.import_data(TERMINAL, "imp", "f.jsonl", data)
        except Exception as exc:  # the assertion below names it
            outcome["error"] = exc

    thread = threading.Thread(target=ours)
    thread.start()
    time.sleep(1.0)  # ours has read the table and waits on the other's write lock
    other.execute("COMMIT")
    thread.join(60)
    other.close()
    assert "error" not in outcome, outcome.get("error")
    assert (outcome["result"].added, outcome["result"].duplicates) == (19, 1)
    assert core.examples.count(TERMINAL, "imp") == 20
    dirty = core.db.execute("SELECT index_dirty FROM assistants WHERE id = ?", [assistant.id])
    assert dirty.fetchone()[0] == 0


def test_the_same_file_imported_twice_at_once_by_two_processes(cli, target, tmp_path):
    """Two `fewtune example import` processes at once: both end cleanly; each row is stored once."""
    file = tmp_path / "many.jsonl"
    file.write_text(
        "".join(json.dumps({"input": f"n {i}", "output": str(i)}) + "\n" for i in range(300)),
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "bot.cli", "example", "import", target, str(file)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert "Traceback" not in err
    added = sorted(int(out.split()[1]) for out, _ in outputs)
    assert sum(added) == 300
    assert count(cli, target) == 300


# -- a refused message leaves no conversation ---------------------------------------------------


@pytest.mark.parametrize("message", ["", "   ", "x" * 40_000, "hi\udcff"])
def test_a_refused_ask_leaves_no_conversation(cli, target, fewtune_home, message):
    error_line(cli("ask", target, message))
    assert rows(fewtune_home, "conversations") == 0
    assert rows(fewtune_home, "messages") == 0


# -- option errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["assistant", "create", "x", "--instructions", "a", "--k", "abc"],
        ["example", "list", "imp", "--limit", "0"],
        ["example", "search", "imp", "q", "-k", "many"],
        ["assistant", "create", "x"],
        ["assistant", "frobnicate"],
        ["example", "list", "imp", "--no-such-option"],
        ["assistant", "create", "x", "--instructions", "a", "--selector", "best"],
    ],
)
def test_option_errors_are_one_line_and_exit_1(cli, target, args):
    line = error_line(cli(*args))
    assert "--help" in line
    assert names(cli) == ["imp"]


def test_asking_for_help_is_not_an_error(cli):
    assert "Usage" in ok(cli("--help"))
    assert "Usage" in ok(cli("example", "--help"))


# -- model names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "local:../../etc/passwd",
        "local:/etc/passwd",
        "local:~root/models",
        "local:models/../../x",
        "local:a/b/c",
        "local:./here",
        "local:" + "m" * 129,
        "local:C:\\models",
        "local:\udcff",
        "local:" + "\U0001f600" * 86,
    ],
)
def test_a_model_name_that_is_a_path_is_refused_when_set(cli, target, model):
    assert "is not a model's name" in error_line(
        cli("assistant", "create", "pathy", "--instructions", "a", "--model", model)
    )
    assert "is not a model's name" in error_line(cli("assistant", "edit", target, "--model", model))
    assert names(cli) == ["imp"]
    assert json.loads(ok(cli("assistant", "show", target, "--json")))["model"] == "local:x"


@pytest.mark.parametrize(
    "model",
    ["local:SmolLM2-135M-Instruct", "local:HuggingFaceTB/SmolLM2-135M-Instruct",
     "local:ft:tiny:helper:ftjob-x", "local:llama3.2:3b", "local:" + "m" * 128],
)  # fmt: skip
def test_model_names_still_accepted(cli, target, model):
    ok(cli("assistant", "edit", target, "--model", model))
    assert json.loads(ok(cli("assistant", "show", target, "--json")))["model"] == model
