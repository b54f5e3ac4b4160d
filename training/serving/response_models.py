"""The response bodies of the chat and completions APIs as pydantic models, for the served
OpenAPI schema (training/serving/openapi.py). The routes build the bodies as dicts
(schemas.completion_body, ...) and return them as they are; tests/test_api_schema_fuzz.py
checks that what they return matches these models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

FinishReason = Literal["stop", "length"]


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class ChatCompletion(BaseModel):
    """A whole answer (`stream` false); with `stream` true the answer comes as server-sent
    `chat.completion.chunk` events, then `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat answer: the role, then text, then the finish
    reason; with `stream_options.include_usage` every chunk has `usage` (null until the last,
    which has no choices)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class Logprobs(BaseModel):
    """The legacy logprobs: a token's log-probability given every token before it (None for a
    prompt's first), its `logprobs` most likely alternatives, and where it starts in `text`."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: Logprobs | None
    finish_reason: FinishReason | None


class TextCompletion(BaseModel):
    """A whole answer (`stream` false); with `stream` true it comes as server-sent
    `text_completion` chunks, then `data: [DONE]`."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class TemplatePrompt(BaseModel):
    prompt: str


class TextCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion: text per choice, then its finish reason;
    with `stream_options.include_usage` a last chunk with no choices carries `usage`."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
