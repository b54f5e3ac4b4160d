"""Examples: add, list, remove, search, and import/export (all or nothing, duplicates, limits)."""

from __future__ import annotations

import json

import pytest

import assistants.example_files as example_files
import assistants.examples as examples_module
from assistants import (
    TERMINAL,
    Actor,
    Core,
    ImportRejected,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)


@pytest.fixture
def helper(core):
    return core.assistants.create(TERMINAL, "helper", "Answer briefly.", k=4)


def pairs(core: Core, name: str = "helper") -> list[tuple[str, str]]:
    return [(e.input, e.output) for e in core.examples.list(TERMINAL, name)]


def stored(core: Core, assistant_id: int) -> tuple[int, int]:
    """(rows in SQLite, vectors in the index) of one assistant."""
    rows = core.db.execute(
        "SELECT count(*) FROM examples WHERE assistant_id = ?", [assistant_id]
    ).fetchone()[0]
    return rows, core.index().count(assistant_id)


def jsonl(*objects: object) -> bytes:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode()


# -- add, list, count, remove ------------------------------------------------------------------


def test_add_list_count_remove(core, helper):
    first = core.examples.add(TERMINAL, "helper", "  two plus two  ", "four")
    second = core.examples.add(TERMINAL, "helper", "three plus three", "six")
    assert (first.input, first.output, first.source) == ("two plus two", "four", "manual")
    assert first.author_id == TERMINAL.user_id
    assert [e.id for e in core.examples.list(TERMINAL, "helper")] == [first.id, second.id]
    assert core.examples.list(TERMINAL, "helper", offset=1)[0].id == second.id
    assert len(core.examples.list(TERMINAL, "helper", limit=1)) == 1
    assert core.examples.count(TERMINAL, "helper") == 2
    assert stored(core, helper.id) == (2, 2)

    removed = core.examples.remove(TERMINAL, "helper", first.id)
    assert removed.id == first.id
    assert pairs(core) == [("three plus three", "six")]
    assert stored(core, helper.id) == (1, 1)
    assert [e.id for e, _ in core.examples.search(TERMINAL, "helper", "two plus two", 5)] == [
        second.id
    ]
    with pytest.raises(NotFound, match=f"no example #{first.id}"):
        core.examples.remove(TERMINAL, "helper", first.id)


@pytest.mark.parametrize(("input", "output"), [("", "x"), ("x", "  "), ("\n", "\t")])
def test_an_example_needs_input_and_output(core, helper, input, output):
    with pytest.raises(InvalidInput, match="both an input and an output"):
        core.examples.add(TERMINAL, "helper", input, output)
    assert stored(core, helper.id) == (0, 0)


def test_adding_the_same_example_twice_is_refused(core, helper):
    core.examples.add(TERMINAL, "helper", "hello", "hi")
    with pytest.raises(InvalidInput, match="already has this example"):
        core.examples.add(TERMINAL, "helper", " hello ", "hi ")
    assert stored(core, helper.id) == (1, 1)


def test_only_managers_change_examples(core):
    core.assistants.create(Actor("u1", "g1"), "team", "Answer.", visibility="guild")
    member = Actor("u2", "g1")
    with pytest.raises(PermissionDenied):
        core.examples.add(member, "team", "a", "b")
    with pytest.raises(PermissionDenied):
        core.examples.import_data(member, "team", "x.jsonl", jsonl({"input": "a", "output": "b"}))
    with pytest.raises(PermissionDenied):
        core.examples.export(member, "team")
    added = core.examples.add(Actor("u3", "g1", can_manage_guild=True), "team", "a", "b")
    with pytest.raises(PermissionDenied):
        core.examples.remove(member, "team", added.id)
    with pytest.raises(NotFound):
        core.examples.add(Actor("u9", "g2"), "team", "c", "d")


def test_only_managers_see_examples_like_instructions(core):
    core.assistants.create(Actor("u1", "g1"), "team", "Answer.", visibility="guild")
    core.examples.add(Actor("u1", "g1"), "team", "secret question", "secret answer")
    member = Actor("u2", "g1")
    with pytest.raises(PermissionDenied):
        core.examples.list(member, "team")
    with pytest.raises(PermissionDenied):
        core.examples.search(member, "team", "question")
    moderator = Actor("u3", "g1", can_manage_guild=True)
    assert [e.input for e in core.examples.list(moderator, "team")] == ["secret question"]
    assert core.examples.count(member, "team") == 1  # how many is not a secret


def test_an_unknown_assistant_is_not_found(core):
    with pytest.raises(NotFound, match="No assistant called 'nope'"):
        core.examples.add(TERMINAL, "nope", "a", "b")


# -- search ------------------------------------------------------------------------------------

TOPICS = [
    ("The cat is sleeping on the sofa.", "cat"),
    ("Stock markets fell sharply today.", "finance"),
    ("How do I bake sourdough bread?", "baking"),
    ("My kitten keeps chasing its tail.", "cat"),
    ("What is the capital of France?", "geography"),
]


def test_search_ranks_best_first_with_scores(core, helper):
    for text, label in TOPICS:
        core.examples.add(TERMINAL, "helper", text, label)
    found = core.examples.search(TERMINAL, "helper", "a cat napping on the couch", k=5)
    assert len(found) == 5
    assert found[0][0].input == "The cat is sleeping on the sofa."
    assert found[1][0].output == "cat"
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.5 > scores[-1]
    assert len(core.examples.search(TERMINAL, "helper", "bread", k=2)) == 2


def test_search_checks_its_arguments(core, helper):
    with pytest.raises(InvalidInput, match="empty"):
        core.examples.search(TERMINAL, "helper", "   ")
    for k in (0, 101):
        with pytest.raises(InvalidInput, match="-k"):
            core.examples.search(TERMINAL, "helper", "x", k)
    assert core.examples.search(TERMINAL, "helper", "anything") == []


def test_examples_of_one_assistant_are_never_returned_for_another(core, helper):
    other = core.assistants.create(TERMINAL, "other", "Other.", k=25, selector="similarity")
    mine = core.examples.add(TERMINAL, "helper", "The cat is sleeping on the sofa.", "cat")
    theirs = core.examples.add(TERMINAL, "other", "Stock markets fell sharply.", "finance")
    found = core.examples.search(TERMINAL, "other", "The cat is sleeping on the sofa.", 10)
    assert [e.id for e, _ in found] == [theirs.id]
    assert core.examples.by_ids(other.id, [mine.id]) == []
    with pytest.raises(NotFound):
        core.examples.remove(TERMINAL, "other", mine.id)
    assert stored(core, helper.id) == (1, 1)
    assert core.examples.inputs(other.id, [mine.id, theirs.id]) == {theirs.id: theirs.input}
    for selector in ("similarity", "mmr", "coverage", "random", "fixed"):
        core.assistants.edit(TERMINAL, "other", selector=selector)
        conversation = core.chat.start(TERMINAL, "other")
        prepared = core.chat.prepare(TERMINAL, conversation.id, "The cat is sleeping on the sofa.")
        assert [e.id for e in prepared.examples] == [theirs.id], selector


# -- import and export -------------------------------------------------------------------------


def test_import_jsonl_of_both_forms(core, helper):
    data = jsonl(
        {"input": "one", "output": "1"},
        {
            "messages": [
                {"role": "system", "content": "ignored: the assistant has its own"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": "2"},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "dropped"},
                {"role": "user", "content": "add one"},
                {"role": "assistant", "content": "to what?"},
                {"role": "user", "content": "three"},
                {"role": "assistant", "content": "4"},
            ]
        },
    )
    result = core.examples.import_data(TERMINAL, "helper", "mixed.jsonl", data)
    assert (result.added, result.duplicates) == (3, 0)
    one, two, multi = core.examples.list(TERMINAL, "helper")
    assert (one.input, one.output, one.turns, one.source) == ("one", "1", None, "import")
    assert (two.input, two.output, two.turns) == ("two", "2", None)
    assert (multi.input, multi.output) == ("three", "4")
    assert [t["role"] for t in multi.turns] == ["user", "assistant", "user", "assistant"]
    assert "dropped" not in json.dumps(multi.as_messages())
    assert multi.as_messages()[0] == {"role": "user", "content": "add one"}
    assert stored(core, helper.id) == (3, 3)


TRICKY = [
    ("plain", "text"),
    ('a "quoted", comma, line', "with\nnewline"),
    ("ünïcødé — 四十二", "42"),
    ("  =1+1 (a spreadsheet formula)  ", "2"),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_import_round_trip(core, helper, fmt):
    for input, output in TRICKY:
        core.examples.add(TERMINAL, "helper", input, output)
    text = core.examples.export(TERMINAL, "helper", fmt)
    if fmt == "csv":
        assert text.startswith("input,output\n")
    else:
        assert json.loads(text.splitlines()[0]) == {"input": "plain", "output": "text"}
    core.assistants.create(TERMINAL, "copy", "Copy.")
    result = core.examples.import_data(TERMINAL, "copy", f"helper.{fmt}", text.encode())
    assert (result.added, result.duplicates) == (len(TRICKY), 0)
    assert pairs(core, "copy") == pairs(core, "helper")
    again = core.examples.import_data(TERMINAL, "copy", f"helper.{fmt}", text.encode())
    assert (again.added, again.duplicates) == (0, len(TRICKY))


def test_multi_turn_examples_round_trip_through_jsonl(core, helper):
    turns = [
        {"role": "user", "content": "add one"},
        {"role": "assistant", "content": "to what?"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "4"},
    ]
    core.examples.import_data(TERMINAL, "helper", "a.jsonl", jsonl({"messages": turns}))
    text = core.examples.export(TERMINAL, "helper", "jsonl")
    assert json.loads(text) == {"messages": turns}
    core.assistants.create(TERMINAL, "copy", "Copy.")
    core.examples.import_data(TERMINAL, "copy", "a.jsonl", text.encode())
    assert core.examples.list(TERMINAL, "copy")[0].turns == turns
    # CSV holds one turn pair: a multi-turn example exports as its last exchange.
    assert core.examples.export(TERMINAL, "helper", "csv") == "input,output\nthree,4\n"


def test_import_csv_with_extra_columns_and_a_byte_order_mark(core, helper):
    data = "\ufeffid,Output,INPUT\n1,uno,one\n2,dos,two\n\n".encode()
    result = core.examples.import_data(TERMINAL, "helper", "sheet.csv", data)
    assert result.added == 2
    assert pairs(core) == [("one", "uno"), ("two", "dos")]


def test_duplicates_are_skipped_and_counted(core, helper):
    core.examples.add(TERMINAL, "helper", "one", "1")
    data = jsonl(
        {"input": "one", "output": "1"},  # already stored
        {"input": "two", "output": "2"},
        {"input": " two ", "output": "2"},  # the same once trimmed
        {"messages": [{"role": "user", "content": "two"}, {"role": "assistant", "content": "2"}]},
        {"input": "two", "output": "II"},  # same input, another answer: not a duplicate
    )
    result = core.examples.import_data(TERMINAL, "helper", "d.jsonl", data)
    assert (result.added, result.duplicates) == (2, 3)
    assert pairs(core) == [("one", "1"), ("two", "2"), ("two", "II")]
    assert stored(core, helper.id) == (3, 3)


BAD_LINES = [
    ('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n{oops\n', 3, "not valid JSON"),
    ('{"input": "a", "output": "b"}\n\n[1, 2]\n', 3, "JSON object"),
    ('{"input": "a"}\n', 1, '"output"'),
    ('{"input": "a", "output": 5}\n', 1, "must be a string"),
    ('{"input": "a", "output": "b"}\n{"input": " ", "output": "b"}\n', 2, "empty"),
    ('{"messages": []}\n', 1, "non-empty list"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}\n', 1, "user turn"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', 1, "end with an assistant"),
    ('{"messages": [{"role": "tool", "content": "hi"}]}\n', 1, "role"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD_LINES)
def test_a_bad_jsonl_line_refuses_the_whole_file(core, helper, text, line, reason):
    core.examples.add(TERMINAL, "helper", "kept", "yes")
    with pytest.raises(ImportRejected) as caught:
        core.examples.import_data(TERMINAL, "helper", "bad.jsonl", text.encode())
    assert f"Line {line}" in str(caught.value)
    assert reason in str(caught.value)
    assert pairs(core) == [("kept", "yes")]
    assert stored(core, helper.id) == (1, 1)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("input,output\na,b\nc,d,e\n", 3),
        ("input,output\na,b\nc,\n", 3),
        ('input,output\na,b\n"c\nd",e\nf\n', 5),  # a quoted field spans lines 3-4
    ],
)
def test_a_bad_csv_row_refuses_the_whole_file(core, helper, text, line):
    with pytest.raises(ImportRejected, match=f"Line {line}"):
        core.examples.import_data(TERMINAL, "helper", "bad.csv", text.encode())
    assert stored(core, helper.id) == (0, 0)


def test_a_too_long_field_on_line_n_refuses_the_whole_file(core, helper, monkeypatch):
    monkeypatch.setattr(examples_module, "MAX_FIELD", 10)
    data = jsonl({"input": "short", "output": "ok"}, {"input": "x" * 11, "output": "ok"})
    with pytest.raises(InvalidInput, match="Line 2's input is 11 characters; the limit is 10"):
        core.examples.import_data(TERMINAL, "helper", "long.jsonl", data)
    assert stored(core, helper.id) == (0, 0)


def test_a_csv_header_alone_holds_no_examples(core, helper):
    for filename in ("f.csv", "f.txt"):
        with pytest.raises(ImportRejected, match="holds no examples"):
            core.examples.import_data(TERMINAL, "helper", filename, b"input,output\n")


def test_csv_without_header_is_refused(core, helper):
    with pytest.raises(ImportRejected, match='Line 1: .*"input" and "output"'):
        core.examples.import_data(TERMINAL, "helper", "x.csv", b"hello,world\nbye,now\n")
    assert stored(core, helper.id) == (0, 0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("input,output\ncafé,ok\n".encode("latin-1"), "not UTF-8"),
        (b"\xff\xfei\x00n\x00", "not UTF-8"),  # UTF-16
        (b"\x00\x01\x02\x03binary", "not a text file"),
        (b"", "holds no examples"),
        (b"\n  \n", "holds no examples"),
    ],
)
def test_unreadable_or_empty_files_are_refused(core, helper, data, reason):
    for filename in ("f.csv", "f.jsonl", "f.txt"):
        with pytest.raises(ImportRejected, match=reason):
            core.examples.import_data(TERMINAL, "helper", filename, data)
    assert stored(core, helper.id) == (0, 0)


def test_file_size_limit(core, helper, monkeypatch):
    data = jsonl({"input": "one", "output": "1"}, {"input": "two", "output": "2"})
    monkeypatch.setattr(example_files, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(LimitExceeded, match="big.jsonl .* at most"):
        core.examples.import_data(TERMINAL, "helper", "big.jsonl", data)
    monkeypatch.setattr(example_files, "MAX_FILE_BYTES", len(data))
    assert core.examples.import_data(TERMINAL, "helper", "big.jsonl", data).added == 2


def test_line_count_limit(core, helper, monkeypatch):
    monkeypatch.setattr(example_files, "MAX_LINES", 2)
    data = jsonl(*({"input": str(i), "output": str(i)} for i in range(3)))
    with pytest.raises(LimitExceeded, match="at most 2"):
        core.examples.import_data(TERMINAL, "helper", "many.jsonl", data)
    assert stored(core, helper.id) == (0, 0)


def test_examples_per_assistant_limit(core, helper, monkeypatch):
    monkeypatch.setattr(examples_module, "MAX_EXAMPLES_PER_ASSISTANT", 3)
    core.examples.add(TERMINAL, "helper", "zero", "0")
    data = jsonl(*({"input": str(i), "output": str(i)} for i in range(3)))
    with pytest.raises(LimitExceeded, match="would have 4 examples; the limit is 3"):
        core.examples.import_data(TERMINAL, "helper", "many.jsonl", data)
    assert stored(core, helper.id) == (1, 1)
    # Duplicates do not count against the limit.
    data = jsonl({"input": "zero", "output": "0"}, {"input": "1", "output": "1"})
    assert core.examples.import_data(TERMINAL, "helper", "ok.jsonl", data).added == 1
    core.examples.add(TERMINAL, "helper", "two", "2")
    with pytest.raises(LimitExceeded):
        core.examples.add(TERMINAL, "helper", "three", "3")
    assert stored(core, helper.id) == (3, 3)


def test_export_needs_a_known_format(core, helper):
    with pytest.raises(ValueError):
        core.examples.export(TERMINAL, "helper", "xml")
