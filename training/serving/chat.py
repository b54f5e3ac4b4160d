"""Routes /v1/models and /v1/chat/completions (stream and not) over the ChatEngine."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from training.api_errors import APIError, error_body, errors
from training.serving.admission import Admission
from training.serving.engine import ChatEngine, EngineError, PreparedChat
from training.serving.listening import EventStream, while_listening
from training.serving.response_models import ChatCompletion, Model, ModelList
from training.serving.schemas import (
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    completion_id,
    model_body,
    unsupported_chat_parameter,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")


def _engine(request: Request) -> ChatEngine:
    return request.app.state.engine


def _admission(request: Request) -> Admission:
    return request.app.state.admission


@router.get("/models", response_model=None, responses={200: {"model": ModelList}})
async def list_models(request: Request) -> dict[str, Any]:
    created = request.app.state.started
    return {
        "object": "list",
        "data": [model_body(m, created) for m in _engine(request).model_ids()],
    }


@router.get(
    "/models/{model_id:path}", response_model=None, responses={200: {"model": Model}, **errors(404)}
)
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    return model_body(_engine(request).resolve(model_id), request.app.state.started)


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: {"model": ChatCompletion}, **errors(400, 404, 429)},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> dict[str, Any] | EventStream:
    refusal = unsupported_chat_parameter(body)
    if refusal is not None:
        raise APIError(400, refusal, code="unsupported_parameter")
    _engine(request).resolve(body.model)  # an unknown model is a 404 without waiting its turn
    return await while_listening(request, _answer(body, request))


async def _answer(body: ChatCompletionRequest, request: Request) -> dict[str, Any] | EventStream:
    """The answer, once the engine is this request's turn (a stream keeps the turn)."""
    engine = _engine(request)
    async with _admission(request).turn() as turn:
        chat = await engine.prepare(body.model, body.message_dicts(), body.sampling())
        cid = completion_id()
        if not body.stream:
            result = await engine.complete(chat)
            return completion_body(cid, chat.model, result)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_sse(engine, chat, cid, include_usage), turn.pass_on())


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(
    engine: ChatEngine, chat: PreparedChat, cid: str, include_usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, **extra: Any) -> str:
        return _event(
            chunk_body(cid, chat.model, created, delta, include_usage=include_usage, **extra)
        )

    yield chunk({"role": "assistant", "content": ""})
    try:
        async with contextlib.aclosing(engine.stream(chat)) as deltas:
            async for delta in deltas:
                if delta.text:
                    yield chunk({"content": delta.text})
                if delta.finish_reason is not None:
                    yield chunk({}, finish_reason=delta.finish_reason)
                    if include_usage:
                        yield chunk(None, usage=delta.usage)
    except (EngineError, APIError) as exc:
        # Headers are sent already: report the error in the stream, as OpenAI does.
        yield _event(error_body(str(exc), "server_error", getattr(exc, "code", None)))
    except Exception:
        log.exception("generation failed for %s", chat.model)
        yield _event(error_body("Generation failed; see the server log.", "server_error", None))
    yield "data: [DONE]\n\n"
