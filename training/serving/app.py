"""The FastAPI app of `fewtune serve`: bearer-token auth, OpenAI-shaped errors, routers.

Adding an API (e.g. /v1/files, /v1/fine_tuning/jobs) is one `app.include_router(router)`: the
token check is an app-wide dependency, errors raised as `APIError` come out in OpenAI's shape,
and handlers reach the engine and settings through `request.app.state`.
"""

from __future__ import annotations

import logging
import secrets
import time

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from storage.settings import Settings
from training.api_errors import APIError, error_body
from training.finetune import attach_finetuning
from training.serving.admission import Admission, ServerBusy
from training.serving.chat import router as chat_router
from training.serving.completions import router as completions_router
from training.serving.engine import ChatEngine, EngineError
from training.serving.listening import ClientGone
from training.serving.openapi import attach_schema, documented_methods

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, type: str = "invalid_request_error", code: str | None = None
) -> JSONResponse:
    body = error_body(message, type, code)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def require_token(request: Request) -> None:
    """Every route needs `Authorization: Bearer <token>`."""
    expected: str = request.app.state.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise APIError(
            401,
            "Missing bearer token: send 'Authorization: Bearer <token>'.",
            code="invalid_api_key",
        )
    if not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise APIError(
            401, "Incorrect API key: it does not match this server's token.", code="invalid_api_key"
        )


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid request body."
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    location, *rest = first.get("loc", ("body",)) or ("body",)
    where = ".".join(str(part) for part in rest)
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if location == "query":
        return f"Invalid query parameter {where}: {message}."
    return f"Invalid request body: {where or 'body'}: {message}."


class ActivityTracker:
    """ASGI middleware counting requests in flight and when the last one ended (idle timeout)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self.last_activity = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight += 1
        self.last_activity = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def idle_seconds(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.last_activity


def create_app(settings: Settings, token: str, engine: ChatEngine | None = None) -> FastAPI:
    """The server app. `engine` defaults to a ChatEngine for settings.server.model (lazy load)."""
    if not token:
        raise ValueError("The server needs a non-empty bearer token.")
    app = FastAPI(
        title="fewtune",
        version="0.1.0",
        dependencies=[Depends(require_token)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by attach_schema instead, behind the token
    )
    app.state.settings = settings
    app.state.token = token
    app.state.engine = engine if engine is not None else ChatEngine(settings)
    server = settings.server
    app.state.admission = Admission(server.max_waiting, server.max_wait_s, server.max_batch)
    app.state.started = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        kind = "server_error" if exc.status >= 500 else "invalid_request_error"
        return error_response(exc.status, str(exc), kind, exc.code)

    @app.exception_handler(ServerBusy)
    async def _busy(request: Request, exc: ServerBusy) -> JSONResponse:
        response = error_response(429, str(exc), "rate_limit_error", exc.code)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        # Nobody reads this answer; 499 is what nginx logs for a client that closed first.
        log.info("%s %s: the client left; its request stopped", request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc), code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path} on this server."
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names the first matching route's methods only (POST for
            # /v1/files, which GET lists too): add every method the schema has for the path.
            first = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
            methods = first | documented_methods(request.app, request.url.path)
            headers["Allow"] = allow = ", ".join(sorted(methods))
            message = f"{request.url.path} answers {allow}, not {request.method}."
        response = error_response(exc.status_code, message, code=None)
        response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error; see the server log.", "server_error")

    app.include_router(chat_router)
    app.include_router(completions_router)
    attach_finetuning(app, settings)  # /v1/files, /v1/fine_tuning/jobs and the job worker
    attach_schema(app)  # GET /openapi.json, behind the token
    app.state.activity = None
    return app


def with_activity(app: FastAPI) -> ActivityTracker:
    """Wrap `app` in an ActivityTracker (kept on app.state.activity) for the idle timeout."""
    tracker = ActivityTracker(app)
    app.state.activity = tracker
    return tracker
