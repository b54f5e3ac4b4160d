"""Example files: JSONL (`{"input","output"}` or OpenAI chat `{"messages": [...]}` lines) and CSV
(an `input,output` header). Parsing is all or nothing: the first bad line refuses the whole file,
naming the line and the reason.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import PurePath

from assistants.errors import ImportRejected, InvalidInput, LimitExceeded
from assistants.text import check_text

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_LINES = 50_000


@dataclass(frozen=True)
class ExampleData:
    """An example before it is stored: input, output, and for multi-turn examples all turns."""

    input: str
    output: str
    turns: list[dict[str, str]] | None = None


def detect_format(filename: str, text: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def parse_examples(filename: str, data: bytes) -> list[tuple[int, ExampleData]]:
    """Parse a whole file into (line number, example) pairs, or raise ImportRejected/LimitExceeded."""
    if len(data) > MAX_FILE_BYTES:
        raise LimitExceeded(
            f"{filename} is {len(data) / 1e6:.1f} MB; an import file may be at most "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB. Split it."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejected(
            f"{filename} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSONL or CSV."
        ) from exc
    if "\x00" in text:
        raise ImportRejected(f"{filename} is not a text file; send JSONL or CSV.")
    if not text.strip():
        raise ImportRejected(f"{filename} holds no examples.")
    fmt = detect_format(filename, text)
    items = _parse_jsonl(text) if fmt == "jsonl" else _parse_csv(text)
    if not items:
        raise ImportRejected(f"{filename} holds no examples.")
    if len(items) > MAX_LINES:
        raise LimitExceeded(
            f"{filename} has {len(items):,} examples; one import may hold at most {MAX_LINES:,}."
        )
    return items


def _parse_jsonl(text: str) -> list[tuple[int, ExampleData]]:
    items = []
    # JSONL lines end at "\n" alone: str.splitlines() also breaks at U+2028, U+0085 and the
    # like, which JSON strings may hold unescaped (our own export writes them so).
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        items.append((number, _from_object(load_json(line, f"Line {number}"), number)))
    return items


def load_json(text: str, where: str) -> object:
    """Parse JSON, or ImportRejected naming `where`: bad syntax, nesting too deep for the
    parser (RecursionError) or an integer too long to convert (ValueError) alike."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRejected(f"{where}: not valid JSON ({exc.msg}).") from exc
    except RecursionError as exc:
        raise ImportRejected(f"{where}: the JSON is nested too deeply.") from exc
    except ValueError as exc:  # int() refuses over 4,300 digits
        raise ImportRejected(f"{where}: the JSON holds a number too long to read.") from exc


def _text(value: object, number: int, what: str) -> str:
    if not isinstance(value, str):
        raise ImportRejected(f"Line {number}: {what} must be a string.")
    if not value.strip():
        raise ImportRejected(f"Line {number}: {what} is empty.")
    try:
        return check_text(value, f"Line {number}: {what}")
    except InvalidInput as exc:
        raise ImportRejected(str(exc)) from exc


def _from_object(obj: object, number: int) -> ExampleData:
    if not isinstance(obj, dict):
        raise ImportRejected(f"Line {number}: expected a JSON object.")
    if "messages" in obj:
        return _from_messages(obj["messages"], number)
    if "input" not in obj or "output" not in obj:
        raise ImportRejected(
            f'Line {number}: expected "input" and "output" fields, or "messages" (OpenAI chat format).'
        )
    return ExampleData(
        _text(obj["input"], number, '"input"'), _text(obj["output"], number, '"output"')
    )


def _from_messages(messages: object, number: int) -> ExampleData:
    if not isinstance(messages, list) or not messages:
        raise ImportRejected(f'Line {number}: "messages" must be a non-empty list.')
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ImportRejected(f"Line {number}: messages[{i}] must be an object.")
        role = message.get("role")
        if role == "system":
            continue  # the assistant's own instructions take the system role
        if role not in ("user", "assistant"):
            raise ImportRejected(
                f"Line {number}: messages[{i}].role must be system, user or assistant."
            )
        content = _text(message.get("content"), number, f"messages[{i}].content")
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ImportRejected(
                f"Line {number}: messages[{i}] should be a {expected} turn (turns alternate, "
                "starting with user)."
            )
        turns.append({"role": role, "content": content})
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        raise ImportRejected(f"Line {number}: the messages must end with an assistant turn.")
    single = len(turns) == 2
    return ExampleData(turns[-2]["content"], turns[-1]["content"], None if single else turns)


def _parse_csv(text: str) -> list[tuple[int, ExampleData]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise ImportRejected(f"Line 1: not valid CSV ({exc}).") from exc
    columns = [h.strip().lower() for h in header]
    if "input" not in columns or "output" not in columns:
        raise ImportRejected('Line 1: a CSV file needs a header with "input" and "output" columns.')
    at_in, at_out = columns.index("input"), columns.index("output")
    items = []
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise ImportRejected(
                    f"Line {number}: expected {len(columns)} columns, found {len(row)}."
                )
            items.append(
                (
                    number,
                    ExampleData(
                        _text(row[at_in], number, "input"), _text(row[at_out], number, "output")
                    ),
                )
            )
    except csv.Error as exc:
        raise ImportRejected(f"Line {reader.line_num}: not valid CSV ({exc}).") from exc
    return items


def dump_examples(items: list[ExampleData], fmt: str) -> str:
    """Write examples in the import formats: JSONL (chat format for multi-turn ones) or CSV."""
    if fmt == "jsonl":
        lines = []
        for item in items:
            if item.turns:
                obj: dict = {"messages": item.turns}
            else:
                obj = {"input": item.input, "output": item.output}
            lines.append(json.dumps(obj, ensure_ascii=False))
        return "".join(line + "\n" for line in lines)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["input", "output"])
        for item in items:
            writer.writerow([item.input, item.output])
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r}")
