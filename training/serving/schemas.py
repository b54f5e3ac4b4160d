"""Request bodies of the OpenAI-compatible chat and completions APIs (pydantic) and the
response shapes.

Fields that fewtune does not use (frequency_penalty, user, logit_bias, ...) are accepted and
ignored, as OpenAI-compatible servers usually do, so any OpenAI client works unchanged.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from training.api_types import WholeNumber
from training.serving.engine import ChatResult, Sampling, Usage

MAX_PROMPTS = 256  # prompts in one /v1/completions request
SEED_LOW, SEED_HIGH = -(2**63), 2**63 - 1  # a 64-bit integer, as OpenAI documents it


def check_text(value: str) -> str:
    """Refuse a lone surrogate (JSON's "\\ud800"): it is no text a tokenizer can read."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "holds a lone surrogate escape (such as \\ud800), which is not text"
        ) from None
    return value


Text = Annotated[str, AfterValidator(check_text)]

# Chat parameters fewtune does not implement; OpenAI would act on them, so ignoring them would
# answer something else than asked (a text instead of a tool call, prose instead of JSON).
UNSUPPORTED_CHAT = ("tools", "tool_choice", "functions", "function_call", "response_format")


# What each of them may be without asking for anything, as the OpenAPI schema says it.
ASKS_NOTHING: dict[str, Any] = {
    "anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}, {"const": "none"}]
}
TEXT_FORMAT: dict[str, Any] = {
    "anyOf": [
        {"type": "null"},
        {"type": "object", "properties": {"type": {"const": "text"}}, "required": ["type"]},
    ]
}


def unsupported_chat_parameter(body: BaseModel) -> str | None:
    """The sentence refusing the first parameter of UNSUPPORTED_CHAT that asks for something."""
    for name in UNSUPPORTED_CHAT:
        value = getattr(body, name)
        if name == "response_format":
            if value is None or (isinstance(value, dict) and value.get("type") == "text"):
                continue
            return (
                'fewtune serve does not support response_format other than {"type": "text"} '
                "yet (no JSON mode): leave it out and ask for JSON in the messages."
            )
        if value is None or value == [] or value == "none":
            continue
        return f"fewtune serve does not support {name} yet (no tool calls): leave it out."
    return None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None

    def as_dict(self) -> dict[str, str]:
        """The message as the chat template wants it: `developer` is the newer `system`."""
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


def _null_or(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, schema]}


# A text or at most 4 (checked by SamplingRequest._few_stops, so its message stays ours).
STOP_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        {"type": "null"},
    ]
}


class SamplingRequest(BaseModel):
    """What chat and completions requests share: the model, the sampling options and their
    checks (one choice, at most 4 stop sequences)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: Text | list[Text] | None = Field(default=None, json_schema_extra=STOP_SCHEMA)
    seed: WholeNumber | None = Field(default=None, ge=SEED_LOW, le=SEED_HIGH)
    n: WholeNumber = Field(default=1, json_schema_extra={"enum": [1]})
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    def _sampling(self, max_tokens: int | None) -> Sampling:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
        )


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: WholeNumber | None = Field(default=None, ge=1)
    max_completion_tokens: WholeNumber | None = Field(default=None, ge=1)
    tools: Any = Field(default=None, json_schema_extra=ASKS_NOTHING)
    tool_choice: Any = Field(default=None, json_schema_extra=ASKS_NOTHING)
    functions: Any = Field(default=None, json_schema_extra=ASKS_NOTHING)
    function_call: Any = Field(default=None, json_schema_extra=ASKS_NOTHING)
    response_format: Any = Field(default=None, json_schema_extra=TEXT_FORMAT)

    def sampling(self) -> Sampling:
        return self._sampling(self.max_completion_tokens or self.max_tokens)

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(cid: str, model: str, result: ChatResult) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_body(result.usage),
    }


def chunk_body(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; delta None means the usage-only chunk (no choices)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if include_usage:
        body["usage"] = usage_body(usage) if usage is not None else None
    return body


def model_body(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "fewtune"}


# The completions route's own refusals, said in the schema: max_tokens 0 only with echo (to
# score the prompt), and no logprobs with stream.
COMPLETION_RULES: dict[str, Any] = {
    "allOf": [
        {
            "not": {
                "required": ["max_tokens"],
                "properties": {"max_tokens": {"const": 0}, "echo": {"const": False}},
            }
        },
        {
            "not": {
                "required": ["stream", "logprobs"],
                "properties": {"stream": {"const": True}, "logprobs": {"type": "integer"}},
            }
        },
    ]
}


# Token ids' upper bound is the model's vocabulary, added to the served schema once it is loaded.
TOKEN_ID = {"type": "integer", "minimum": 0}
PROMPT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "maxItems": MAX_PROMPTS,
        },
        {"type": "array", "items": TOKEN_ID, "minItems": 1},
        {
            "type": "array",
            "items": {"type": "array", "items": TOKEN_ID, "minItems": 1},
            "minItems": 1,
            "maxItems": MAX_PROMPTS,
        },
    ]
}


class CompletionRequest(SamplingRequest):
    """The legacy `/v1/completions` body. Penalties and `user` are ignored as in chat; options
    that would change what a score means (best_of, suffix, logit_bias) are refused."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=COMPLETION_RULES)

    prompt: str | list[str] | list[WholeNumber] | list[list[WholeNumber]] = Field(
        json_schema_extra=PROMPT_SCHEMA
    )
    max_tokens: WholeNumber | None = Field(
        default=16, ge=0, description="16, or [server] max_tokens_limit where that is lower."
    )
    echo: bool = False
    logprobs: WholeNumber | None = Field(default=None, ge=0, le=5)
    # Accepted only where they change nothing (the validators below), as the schema says.
    best_of: WholeNumber | None = Field(default=None, json_schema_extra=_null_or({"const": 1}))
    suffix: str | None = Field(default=None, json_schema_extra=_null_or({"const": ""}))
    logit_bias: dict[str, float] | None = Field(
        default=None, json_schema_extra=_null_or({"type": "object", "maxProperties": 0})
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        def ids(item: Any) -> bool:
            return isinstance(item, list) and all(
                (isinstance(i, int) and not isinstance(i, bool))
                or (isinstance(i, float) and i.is_integer())
                for i in item
            )

        if isinstance(value, str) or ids(value):
            return value
        if isinstance(value, list) and (
            all(isinstance(item, str) for item in value) or all(ids(item) for item in value)
        ):
            return value
        raise ValueError(
            "must be a text, a list of texts, a list of token ids or a list of such lists"
        )

    @field_validator("prompt")
    @classmethod
    def _some_prompts(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, list) and not value:
            raise ValueError("give a text, a list of texts, or token ids")
        if isinstance(value, list) and len(value) > MAX_PROMPTS and not isinstance(value[0], int):
            raise ValueError(f"at most {MAX_PROMPTS} prompts in one request")
        for item in [value] if isinstance(value, str) else value:
            if isinstance(item, str):
                check_text(item)
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("insertion (a suffix) is not supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One entry per choice: a text or a list of token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [[int(item) for item in self.prompt]]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    def default_tokens_within(self, limit: int) -> None:
        """Without max_tokens, the default 16 is lowered to the server's `max_tokens_limit` (as
        chat's 512 is), so a request that asks for no length is never refused for its length."""
        if "max_tokens" not in self.model_fields_set or self.max_tokens is None:
            self.max_tokens = min(16, limit)

    def wanted_tokens(self) -> int:
        return 16 if self.max_tokens is None else self.max_tokens

    def sampling(self) -> Sampling:
        return self._sampling(self.wanted_tokens())


class ApplyTemplateRequest(BaseModel):
    """`/v1/apply-template` (llama.cpp's `/apply-template`): the prompt chat would build."""

    model_config = ConfigDict(extra="ignore", strict=True)

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=256)

    def message_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


def text_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def text_choice(
    index: int, text: str, logprobs: dict[str, Any] | None, finish_reason: str | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def text_completion_body(
    cid: str, model: str, created: int, choices: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    """A `text_completion` (a whole answer, or one chunk of a stream: usage None there)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body
