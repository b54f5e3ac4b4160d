"""Read and validate OpenAI chat fine-tuning JSONL: one `{"messages": [...]}` example per line.

Each message is `{"role": "system"|"user"|"assistant", "content": str}`; an assistant message may
carry `"weight": 0` (do not learn this turn) or `"weight": 1` (the default). The fine-tuning API
checks an upload with `validate_chat_jsonl` and the trainer reads its examples with it, so a
file either trains or is refused with one sentence naming the line and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
_MESSAGE_KEYS = {"role", "content", "weight", "name"}


class DatasetError(ValueError):
    """A chat JSONL file that cannot be trained on; `line` is 1-based, None for the whole file."""

    def __init__(self, line: int | None, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


def validate_chat_jsonl(path_or_bytes: str | Path | bytes) -> list[dict[str, Any]]:
    """Parse a chat fine-tuning file (a path or its bytes) and return its examples, in order.

    Blank lines are skipped. Raises DatasetError on the first problem, naming the line.
    """
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(Path(path_or_bytes))
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
        data = data[3:]
    examples = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        text = _decode(raw, number)
        if not text.strip():
            continue
        examples.append(_parse_example(text, number))
    if not examples:
        raise DatasetError(
            None, "the file is empty: it needs one chat example per line, as a JSON object"
        )
    return examples


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(None, f"the file {path} does not exist") from None
    except OSError as error:
        raise DatasetError(None, f"the file {path} cannot be read ({error.strerror})") from None


def _decode(raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(
            number,
            f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
        ) from None


def _parse_example(text: str, number: int) -> dict[str, Any]:
    def fail(reason: str) -> DatasetError:
        return DatasetError(number, reason)

    try:
        example = json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(f"is not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise fail("is nested too deeply to be a chat example") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise fail("holds a number too long to read") from None
    try:
        json.dumps(example, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" escapes a lone surrogate: no text can hold it
        raise fail("holds a lone surrogate escape (such as \\ud800), which is not text") from None
    if not isinstance(example, dict):
        raise fail('must be a JSON object like {"messages": [...]}')
    if "messages" not in example:
        raise fail('has no "messages" list')
    unknown = sorted(set(example) - {"messages"})
    if unknown:
        raise fail(f'has an unsupported key "{unknown[0]}"; only "messages" is supported')
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        raise fail('"messages" must be a non-empty list of messages')
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]", fail)
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise fail("has no assistant message; an example needs at least one answer to learn from")
    if all(m.get("weight", 1) == 0 for m in assistants):
        raise fail("has no assistant message to learn from: every one has weight 0")
    return example


def _check_message(message: Any, where: str, fail: Any) -> None:
    if not isinstance(message, dict):
        raise fail(f'{where} must be an object with "role" and "content"')
    role = message.get("role")
    if role not in ROLES:
        shown = "missing" if role is None else json.dumps(role)
        raise fail(f"{where}.role must be one of {', '.join(ROLES)} (it is {shown})")
    unknown = sorted(set(message) - _MESSAGE_KEYS)
    if unknown:
        raise fail(f'{where} has an unsupported key "{unknown[0]}"')
    if "content" not in message:
        raise fail(f'{where} has no "content"')
    content = message["content"]
    if not isinstance(content, str):
        raise fail(f"{where}.content must be a string")
    if "name" in message and not isinstance(message["name"], str):
        raise fail(f"{where}.name must be a string")
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            raise fail(f"{where}.weight is only allowed on assistant messages")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise fail(f"{where}.weight must be 0 or 1")
    if role == "assistant" and message.get("weight", 1) == 1 and not content.strip():
        raise fail(f"{where}.content is empty; an assistant message to learn from needs text")


IGNORE_INDEX = -100  # the label of a token the loss skips (PyTorch's cross-entropy default)
_MARKER = "\x00fewtune-content\x00"


@dataclass(frozen=True)
class TokenizedChat:
    """One example as token ids with labels: IGNORE_INDEX except on the tokens to learn."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_trained(self) -> int:
        """Tokens the loss learns; the first token predicts nothing, so it never counts."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, Any]], max_seq_len: int
) -> TokenizedChat:
    """Render `messages` with the tokenizer's chat template and label the tokens to learn.

    Learned: the content of each assistant message whose weight is not 0, plus the end-of-turn
    token right after it (the tokenizer's eos, `<|im_end|>` for SmolLM2) so the model learns to
    stop. Everything else (system, user, role headers, weight-0 turns) is IGNORE_INDEX. The spans
    come from the rendered text, not from `{% generation %}` markers, which SmolLM2 lacks.
    Longer examples are cut to `max_seq_len` tokens from the end.
    """
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    spans = [
        _learned_span(tokenizer, turns, index, text)
        for index, message in enumerate(messages)
        if message["role"] == "assistant" and message.get("weight", 1) != 0
    ]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(input_ids, encoded["offset_mapping"], strict=True)
    ]
    truncated = len(input_ids) > max_seq_len
    return TokenizedChat(input_ids[:max_seq_len], labels[:max_seq_len], truncated)


def _learned_span(
    tokenizer: Any, turns: list[dict[str, str]], index: int, text: str
) -> tuple[int, int]:
    """Character span of turn `index`'s content and its end-of-turn token within `text`."""
    marked = [*turns[:index], {**turns[index], "content": _MARKER}, *turns[index + 1 :]]
    start = tokenizer.apply_chat_template(marked, tokenize=False).find(_MARKER)
    content = turns[index]["content"]
    if start < 0 or text[start : start + len(content)] != content:
        raise ValueError("the chat template does not render message contents verbatim")
    end = start + len(content)
    eos = tokenizer.eos_token or ""
    if eos and text.startswith(eos, end):
        end += len(eos)
    return start, end
