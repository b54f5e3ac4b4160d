"""The OpenAPI schema of `fewtune serve`, at GET /openapi.json behind the same token as the API,
made true: what it documents is what the server answers (tests/test_api_schema.py checks every
documented status, tests/test_api_schema_fuzz.py runs schemathesis against it).

Routes document their own responses (`responses=`: a response model for the 200, and
`training.api_errors.errors(...)` for the error statuses each can answer). What holds for every
route is added here, where FastAPI's generated schema would say otherwise:
- a request that fails validation is a 400 in OpenAI's error shape (app.py's handler), never
  FastAPI's 422, so 422 and its `HTTPValidationError` are taken out;
- every route needs the bearer token: the `bearer` security scheme and a 401 on every operation;
- with `stream` true a generation route answers server-sent events: each event's data is a
  chunk (`ChatCompletionChunk`, `TextCompletionChunk`) or an error (`ErrorResponse`, when
  generation fails after the headers are sent) as JSON, or `[DONE]`;
- `max_tokens` is capped by `[server] max_tokens_limit`, known only when the app is made, and
  a prompt's token ids by the model's vocabulary, known once the model is loaded (the schema
  is kept from then on; `fewtune serve` loads it before it listens);
- pydantic writes the bounds of a field with a before-validator (`api_types.WholeNumber`) as
  `ge`/`le`: they are put in JSON Schema's words (`minimum`, `maximum`);
- a method a path does not have is a 405 with an `Allow` header: OpenAPI lists the methods a
  path has, not the others, so the description says it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from training.api_errors import MEANINGS
from training.serving.response_models import ChatCompletionChunk, TextCompletionChunk

DESCRIPTION = (
    "fewtune's OpenAI-compatible server: chat and legacy completions (with echo and logprobs "
    "for scoring), the fine-tuning API (/v1/files, /v1/fine_tuning/jobs) and its adapter "
    "download. Every route needs `Authorization: Bearer <token>` (401 without it). Errors are "
    'OpenAI\'s {"error": {"message", "type", "code", "param"}}, with one sentence in message; '
    "a request that fails validation is a 400. A method a path does not list is answered 405 "
    "with an Allow header naming the ones it does."
)
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
STREAMED: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionChunk,
    "/v1/completions": TextCompletionChunk,
}
# The request fields `[server] max_tokens_limit` caps (engine.ChatEngine._check_max_tokens).
CAPPED = {
    "ChatCompletionRequest": ("max_tokens", "max_completion_tokens"),
    "CompletionRequest": ("max_tokens",),
}


def server_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document as the server behaves (see the module's docstring)."""
    schema = get_openapi(
        title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes
    )
    components = schema.setdefault("components", {})
    models = components.setdefault("schemas", {})
    assert "ErrorResponse" in models, "routes document errors with training.api_errors.errors"
    for name in ("HTTPValidationError", "ValidationError"):
        models.pop(name, None)
    _bounds_in_json_schema_words(models)
    unauthorized = {
        "description": MEANINGS[401],
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            responses.pop("422", None)
            responses["401"] = unauthorized
    for path, chunk in STREAMED.items():
        _document_stream(schema["paths"][path]["post"], chunk, models)
    limit = app.state.settings.server.max_tokens_limit
    for model, fields in CAPPED.items():
        for field in fields:
            _cap(models[model]["properties"][field], limit)
    vocabulary = app.state.engine.vocabulary_size
    if vocabulary:
        _cap_token_ids(models["CompletionRequest"]["properties"]["prompt"], vocabulary - 1)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}]
    return schema


BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _bounds_in_json_schema_words(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for pydantic_word, word in BOUNDS.items():
                if pydantic_word in node:
                    node[word] = node.pop(pydantic_word)
        for value in node.values():
            _bounds_in_json_schema_words(value)
    elif isinstance(node, list):
        for value in node:
            _bounds_in_json_schema_words(value)


def _document_stream(
    operation: dict[str, Any], chunk: type[BaseModel], models: dict[str, Any]
) -> None:
    """The 200's text/event-stream: each event's data is a chunk, an error, or [DONE]
    (tests/test_api_schema.py reads a stream's chunks with these models)."""
    definition = chunk.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in definition.pop("$defs", {}).items():
        models.setdefault(name, nested)
    models[chunk.__name__] = definition
    event = {  # an event as OpenAPI 3.2 describes text/event-stream: data as its text
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "description": "A chunk or an error as JSON text (contentSchema), or [DONE] "
                "(the last event).",
                "contentSchema": {
                    "anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"}, ERROR_SCHEMA]
                },
            }
        },
    }
    operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": event}


def _cap(field: dict[str, Any], limit: int) -> None:
    """Set `maximum` on the integer branch of a field (`integer`, or `integer | null`)."""
    for branch in field.get("anyOf", [field]):
        if branch.get("type") == "integer":
            branch["maximum"] = limit


def _cap_token_ids(prompt: dict[str, Any], highest: int) -> None:
    """Set `maximum` on every token id of the prompt's forms (schemas.PROMPT_SCHEMA)."""
    for form in prompt["anyOf"]:
        items = form.get("items", {})
        for ids in (items, items.get("items", {})):
            if ids.get("type") == "integer":
                ids["maximum"] = highest


def documented_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the schema documents for a request path (a 405's Allow)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        parts = re.split(r"(\{[^}]*\})", template)  # /v1/files/{file_id} -> literal, {id}
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in operations}
    return methods


def attach_schema(app: FastAPI) -> None:
    """Serve `server_schema(app)` at GET /openapi.json, behind the app's token like every route."""
    router = APIRouter()

    def cached() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = server_schema(app)
        if app.state.engine.loaded:  # complete: the vocabulary is known
            app.openapi_schema = schema
        return schema

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(cached())

    app.openapi = cached  # type: ignore[method-assign]
    app.include_router(router)
