"""Routes /v1/completions (the legacy text API, with echo and logprobs for scoring a text) and
/v1/apply-template (the prompt that chat builds from messages), over the ChatEngine.

Scoring the answer to chat messages as served: prompt = apply-template(messages), then
completions(prompt + answer, echo=true, logprobs=0, max_tokens=0), and sum the token_logprobs of
the tokens whose text_offset >= len(prompt).
"""

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
from training.serving.engine import ChatEngine, EngineError, PreparedText, Usage
from training.serving.listening import EventStream, while_listening
from training.serving.response_models import TemplatePrompt, TextCompletion
from training.serving.schemas import (
    ApplyTemplateRequest,
    CompletionRequest,
    text_choice,
    text_completion_body,
    text_completion_id,
)
from training.serving.scoring import offsets

log = logging.getLogger(__name__)
router = APIRouter()


def _engine(request: Request) -> ChatEngine:
    return request.app.state.engine


def _admission(request: Request) -> Admission:
    return request.app.state.admission


TEMPLATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TemplatePrompt},
    **errors(400, 404, 429),  # the template is made on the engine's thread: it waits its turn
}


@router.post("/v1/apply-template", response_model=None, responses=TEMPLATE_RESPONSES)
@router.post("/apply-template", response_model=None, responses=TEMPLATE_RESPONSES)
async def apply_template(body: ApplyTemplateRequest, request: Request) -> dict[str, str]:
    engine = _engine(request)
    if body.model is not None:
        engine.resolve(body.model)  # one base model: every served model has its template

    async def template() -> dict[str, str]:
        async with _admission(request).turn():  # the tokenizer runs on the engine's thread
            return {"prompt": await engine.prompt_text(body.message_dicts())}

    return await while_listening(request, template())


@router.post(
    "/v1/completions",
    response_model=None,
    responses={200: {"model": TextCompletion}, **errors(400, 404, 429)},
)
async def completions(body: CompletionRequest, request: Request) -> dict[str, Any] | EventStream:
    body.default_tokens_within(request.app.state.settings.server.max_tokens_limit)
    if body.wanted_tokens() == 0 and not body.echo:
        raise APIError(
            400,
            "max_tokens 0 generates nothing: set echo to true to score the prompt, "
            "or ask for at least 1 token.",
            code="invalid_request",
        )
    if body.stream and body.logprobs is not None:
        raise APIError(
            400,
            "logprobs are not supported with stream: ask without stream to get them.",
            code="invalid_request",
        )
    _engine(request).resolve(body.model)
    return await while_listening(request, _answer(body, request))


async def _answer(body: CompletionRequest, request: Request) -> dict[str, Any] | EventStream:
    """Every prompt's choice, once the engine is this request's turn (a stream keeps it)."""
    engine = _engine(request)
    scoring = body.wanted_tokens() == 0
    given = body.prompts()
    async with _admission(request).turn() as turn:
        prompts: list[PreparedText] = []
        for index, text in enumerate(given):
            try:
                prompts.append(
                    await engine.prepare_text(body.model, text, body.sampling(), scoring=scoring)
                )
            except EngineError as exc:  # say which prompt of several
                if len(given) == 1:
                    raise
                raise type(exc)(f"Prompt {index}: {exc}") from exc
        cid = text_completion_id()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventStream(_sse(engine, body, prompts, cid, include_usage), turn.pass_on())
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for index, prompt in enumerate(prompts):
            choice, usage = await _choice(engine, body, index, prompt)
            choices.append(choice)
            prompt_tokens += usage.prompt_tokens
            completion_tokens += usage.completion_tokens
    model = prompts[0].chat.model
    usage = Usage(prompt_tokens, completion_tokens)
    return text_completion_body(cid, model, int(time.time()), choices, usage)


async def _choice(
    engine: ChatEngine, body: CompletionRequest, index: int, prompt: PreparedText
) -> tuple[dict[str, Any], Usage]:
    """One prompt's choice, whole: its text, logprobs where asked, finish reason and usage."""
    chat = prompt.chat
    prompt_ids = list(chat.prompt_ids)
    if body.wanted_tokens() == 0:
        text, finish, generated = "", "length", []
        usage = Usage(len(prompt_ids), 0)
    else:
        result = await engine.complete(chat)
        text, finish, generated, usage = (
            result.text,
            result.finish_reason,
            list(result.ids),
            result.usage,
        )
    logprobs = None
    if body.logprobs is not None:
        logprobs = await _logprobs(engine, body, prompt, generated, text)
    full = prompt.text + text if body.echo else text
    return text_choice(index, full, logprobs, finish), usage


async def _logprobs(
    engine: ChatEngine,
    body: CompletionRequest,
    prompt: PreparedText,
    generated: list[int],
    text: str,
) -> dict[str, Any]:
    """OpenAI's legacy logprobs object over the prompt's tokens (with echo) and the generated
    ones, each token's log-probability under the model given every token before it."""
    chat = prompt.chat
    ids = list(chat.prompt_ids) + generated
    scored = await engine.score(chat.model, ids, body.logprobs or 0, len(chat.prompt_ids))
    listed, at = listed_tokens(scored.pieces, len(chat.prompt_ids), prompt, body.echo, text)
    return {
        "tokens": [scored.pieces[i] for i in listed],
        "token_logprobs": [scored.logprobs[i] for i in listed],
        "top_logprobs": [scored.top[i] or None for i in listed],
        "text_offset": at,
    }


def listed_tokens(
    pieces: list[str], n_prompt: int, prompt: PreparedText, echo: bool, text: str
) -> tuple[list[int], list[int]]:
    """Which tokens a choice's logprobs list (positions in prompt + generated) and the offset
    of each in the choice's text. With echo, the prompt's own (an added start token is
    context); then every generated token, the end token too (its piece is ""), as OpenAI and
    vLLM list it: lm-evaluation-harness drops the last listed token as the generated one. Only
    where a stop string cut the text are the tokens after the cut left out."""
    listed = list(range(prompt.added, n_prompt)) if echo else []
    at = offsets([pieces[i] for i in listed])
    start = len(prompt.text) if echo else 0
    generated = list(range(n_prompt, len(pieces)))
    generated_at = offsets([pieces[i] for i in generated], start)
    cut = "".join(pieces[i] for i in generated) != text
    for i, offset in zip(generated, generated_at, strict=True):
        if cut and offset - start >= len(text):
            break
        listed.append(i)
        at.append(offset)
    return listed, at


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(
    engine: ChatEngine,
    body: CompletionRequest,
    prompts: list[PreparedText],
    cid: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The prompts' answers one after the other, as `text_completion` chunks, then [DONE]."""
    created = int(time.time())
    model = prompts[0].chat.model

    def chunk(index: int, text: str, finish_reason: str | None = None) -> str:
        choice = text_choice(index, text, None, finish_reason)
        return _event(text_completion_body(cid, model, created, [choice], None))

    prompt_tokens = completion_tokens = 0
    try:
        for index, prompt in enumerate(prompts):
            prompt_tokens += len(prompt.chat.prompt_ids)
            if body.echo:
                yield chunk(index, prompt.text)
            if body.wanted_tokens() == 0:
                yield chunk(index, "", "length")
                continue
            async with contextlib.aclosing(engine.stream(prompt.chat)) as deltas:
                async for delta in deltas:
                    if delta.text:
                        yield chunk(index, delta.text)
                    if delta.finish_reason is not None:
                        yield chunk(index, "", delta.finish_reason)
                        if delta.usage is not None:
                            completion_tokens += delta.usage.completion_tokens
        if include_usage:
            usage = Usage(prompt_tokens, completion_tokens)
            yield _event(text_completion_body(cid, model, created, [], usage))
    except (EngineError, APIError) as exc:
        # Headers are sent already: report the error in the stream, as OpenAI does.
        yield _event(error_body(str(exc), "server_error", getattr(exc, "code", None)))
    except Exception:
        log.exception("generation failed for %s", model)
        yield _event(error_body("Generation failed; see the server log.", "server_error", None))
    yield "data: [DONE]\n\n"
