"""Fuzzing what users hand in (issue 12): the import readers and the CLI commands that take text.
Whatever arrives, the answer is a result or one `Error:` line with exit 1, never a traceback,
and a refusal stores nothing. Bounded (examples, no deadline, derandomised) so it takes seconds;
the defects found by hand are the explicit examples."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from assistants import TERMINAL, FewtuneError  # noqa: E402
from assistants.example_files import parse_examples  # noqa: E402
from assistants.transfer import import_assistant  # noqa: E402

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5_000
SURROGATES = ["\ud800", "\udfff", "\udcff", "\udced\udca0\udc80"]
ODD = [*SURROGATES, "\u2028", "\u2029", "\x85", "\x00", "\n", "\r", "\t", " ", "-", "--k", "é"]

FUZZ = settings(
    # bench/reliability.py --cli runs these with more examples
    max_examples=int(os.environ.get("FEWTUNE_FUZZ_EXAMPLES", "30")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(ODD)), max_size=6).map("".join)
refused_messages = st.one_of(
    st.tuples(texts, st.sampled_from(SURROGATES), texts).map("".join),
    st.sampled_from(["", " ", "\n\t ", "\u3000"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
example_objects = st.one_of(
    st.fixed_dictionaries({"input": json_values | texts, "output": json_values | texts}),
    st.fixed_dictionaries(
        {"messages": st.lists(st.fixed_dictionaries({"role": texts, "content": texts}))}
    ),
    json_values,
)


def lines_of(objects: list) -> bytes:
    # ASCII escapes let lone surrogates through as JSON, the way a hostile file carries them.
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


def well_formed(text: str) -> bool:
    return bool(text.strip()) and not any("\ud800" <= c <= "\udfff" for c in text)


def clean(result) -> bool:
    """A success, or one `Error:` line on stderr with exit 1; never a traceback or exit 2."""
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return True
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return False


def stored(home) -> tuple[int, ...]:
    with sqlite3.connect(home / "fewtune.db") as db:
        return tuple(
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("assistants", "assistant_versions", "examples", "conversations")
        )


# -- the readers ---------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.lists(example_objects, max_size=4).map(lines_of)))
@example(DEEP.encode())
@example(('{"input": "one", "output": ' + HUGE + "}").encode())
@example(b'{"input": "\\ud800", "output": "x"}')
@example('{"input": "a\u2028b", "output": "c\x85d"}\n'.encode())
@example("input,output\n\udcff,x\n".encode("utf-8", "surrogatepass"))
def test_the_example_reader_refuses_in_one_sentence_or_reads_clean_text(data):
    for filename in ("fuzz.jsonl", "fuzz.csv", "fuzz"):
        try:
            items = parse_examples(filename, data)
        except FewtuneError as exc:
            assert "\n" not in str(exc)
            continue
        for _, item in items:
            assert well_formed(item.input) and well_formed(item.output)
            for turn in item.turns or []:
                assert well_formed(turn["content"])


@FUZZ
@given(
    instructions=st.one_of(texts, json_values),
    examples=st.lists(example_objects, max_size=3),
    extra=json_values,
)
@example(instructions="Digits.", examples=[], extra=2**70)
@example(instructions="a\ud800", examples=[], extra=None)
@example(instructions="Digits.", examples=[{"input": "\udcff", "output": "x"}], extra=None)
@example(instructions="Digits.", examples=[{"input": "a\u2028b", "output": "1"}], extra=None)
def test_an_assistant_import_is_whole_or_leaves_nothing(core, fewtune_home, instructions,
                                                        examples, extra):  # fmt: skip
    bundle = {
        "format": "fewtune-assistant",
        "version": 1,
        "assistant": {"instructions": instructions, "model": "local:x"},
        "examples": examples,
        "extra": extra,
    }
    before = stored(fewtune_home)
    name = f"fuzz{before[0]}"
    text = json.dumps(bundle)
    for data in (text.encode(), DEEP.encode(), (text[:-1] + ', "more": ' + HUGE + "}").encode()):
        try:
            import_assistant(core, TERMINAL, data, name=name)
        except FewtuneError as exc:
            assert "\n" not in str(exc)
            assert stored(fewtune_home)[0] == before[0]
        else:
            core.assistants.delete(TERMINAL, name)


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def fuzzed(cli):
    assert clean(
        cli("assistant", "create", "fz", "--instructions", "Digits.", "--model", "local:x")
    )
    return "fz"


@FUZZ
@given(input=texts, output=texts)
@example(input="\udced\udca0\udc80", output="x")
@example(input="a\u2028b", output="c\x85d")
@example(input="", output="x")
def test_example_add_and_search(cli, fuzzed, fewtune_home, input, output):
    before = stored(fewtune_home)
    if not clean(cli("example", "add", fuzzed, "--input", input, "--output", output)):
        assert stored(fewtune_home) == before
    clean(cli("example", "search", fuzzed, input))
    clean(cli("example", "search", fuzzed, input, "-k", output))


@FUZZ
@given(name=texts, instructions=texts, description=texts, model=texts)
@example(name="bu", instructions="abc\udcff", description="", model="local:x")
@example(name="bu", instructions="a", description="", model="local:../../etc/passwd")
@example(name="\udcff", instructions="a", description="", model="local:x")
def test_assistant_create_and_edit(cli, fuzzed, fewtune_home, name, instructions, description,
                                   model):  # fmt: skip
    before = stored(fewtune_home)
    created = cli("assistant", "create", name, "--instructions", instructions,
                  "--description", description, "--model", model)  # fmt: skip
    if clean(created):
        clean(cli("assistant", "delete", name, "--yes"))
    else:
        assert stored(fewtune_home) == before
    if not clean(
        cli("assistant", "edit", fuzzed, "--instructions", instructions, "--model", model)
    ):
        assert stored(fewtune_home)[1] == before[1]


@FUZZ
@given(message=refused_messages, name=texts)
@example(message="hi\udcff", name="fz")
@example(message="", name="fz")
def test_a_refused_ask_stores_nothing(cli, fuzzed, fewtune_home, message, name):
    before = stored(fewtune_home)
    assert not clean(cli("ask", fuzzed, message))
    assert not clean(cli("ask", name + "\udcff", "hi"))
    assert stored(fewtune_home) == before
