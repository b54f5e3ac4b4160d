"""validate_chat_jsonl: good files parse, bad ones are refused with the line and the reason."""

import json

import pytest

from training.trainer.chat_data import DatasetError, validate_chat_jsonl


def line(*messages: dict) -> str:
    return json.dumps({"messages": list(messages)})


SYSTEM = {"role": "system", "content": "Answer with digits."}
USER = {"role": "user", "content": "forty-two"}
ANSWER = {"role": "assistant", "content": "42"}


def refused(text: str | bytes) -> DatasetError:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(DatasetError) as caught:
        validate_chat_jsonl(data)
    return caught.value


def test_a_good_file_parses_from_a_path_and_from_bytes(tmp_path):
    text = "\n".join(
        [
            line(SYSTEM, USER, ANSWER),
            "",  # blank lines are skipped
            line(USER, {**ANSWER, "weight": 0}, USER, {**ANSWER, "weight": 1}),
        ]
    )
    path = tmp_path / "train.jsonl"
    path.write_text(text + "\n")
    examples = validate_chat_jsonl(path)
    assert examples == validate_chat_jsonl(str(path)) == validate_chat_jsonl(text.encode())
    assert len(examples) == 2
    assert examples[1]["messages"][1]["weight"] == 0


def test_a_byte_order_mark_is_accepted():
    assert len(validate_chat_jsonl(b"\xef\xbb\xbf" + line(USER, ANSWER).encode())) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            line(SYSTEM, {"role": "bot", "content": "42"}),
            'line 2: messages[1].role must be one of system, user, assistant (it is "bot")',
        ),
        ("{not json", "line 2: is not valid JSON"),
        ("[1, 2]", 'line 2: must be a JSON object like {"messages": [...]}'),
        ('{"prompt": "a", "completion": "b"}', 'line 2: has no "messages" list'),
        ('{"messages": []}', 'line 2: "messages" must be a non-empty list'),
        (line(SYSTEM, USER), "line 2: has no assistant message"),
        (line(USER, {**ANSWER, "weight": 0}), "line 2: has no assistant message to learn from"),
        (line(USER, {**ANSWER, "weight": 2}), "line 2: messages[1].weight must be 0 or 1"),
        (line(USER, {**ANSWER, "weight": True}), "line 2: messages[1].weight must be 0 or 1"),
        (line({**USER, "weight": 0}, ANSWER), "line 2: messages[0].weight is only allowed on"),
        (line(USER, {"role": "assistant"}), 'line 2: messages[1] has no "content"'),
        (
            line(USER, {"role": "assistant", "content": [{"type": "text", "text": "4"}]}),
            "line 2: messages[1].content must be a string",
        ),
        (line(USER, {**ANSWER, "content": "  "}), "line 2: messages[1].content is empty"),
        (line(USER, {**ANSWER, "tool_calls": []}), 'unsupported key "tool_calls"'),
        (
            json.dumps({"messages": [USER, ANSWER], "tools": []}),
            'line 2: has an unsupported key "tools"',
        ),
        (line(USER, "hello"), 'line 2: messages[1] must be an object with "role"'),
    ],
)
def test_a_bad_line_is_named_with_its_reason(text, expected):
    error = refused(line(USER, ANSWER) + "\n" + text + "\n" + line(USER, ANSWER))
    assert error.line == 2
    assert expected in str(error)
    assert "\n" not in str(error)  # one sentence, fit for an API error message


def test_non_utf8_is_refused_with_its_line_and_column():
    error = refused(line(USER, ANSWER).encode() + b'\n{"messages": "caf\xe9"}\n')
    assert str(error) == "line 2: is not UTF-8 text (byte 0xe9 at column 18)"


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_an_empty_file_is_refused(data):
    error = refused(data)
    assert error.line is None
    assert str(error).startswith("the file is empty")


def test_a_missing_file_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        validate_chat_jsonl(tmp_path / "nope.jsonl")
