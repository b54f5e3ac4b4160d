"""The OpenAI-shaped errors of `fewtune serve`, shared by its two rooms (serving and finetune).

A route raises `APIError(status, message, ...)`; the app (training.serving.app) answers it as
{"error": {"message", "type", "code", "param"}} with that status. It lives here, not in the app,
so that the fine-tuning routes can raise it without importing the server that includes them.
Routes name the error statuses they can answer with `errors(...)`, which documents them in the
served OpenAPI schema (training/serving/openapi.py) in this shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class APIError(Exception):
    """An error answered as {"error": {"message", "type", "code"}} with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code


def error_body(message: str, type: str, code: str | None) -> dict[str, Any]:
    """The JSON body OpenAI's clients read an error from (also sent as a stream's last event)."""
    return {"error": {"message": message, "type": type, "code": code, "param": None}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None
    param: str | None


class ErrorResponse(BaseModel):
    """Every error's body: OpenAI's shape, one sentence in `message`."""

    error: ErrorDetail


MEANINGS = {
    400: "The request is invalid (a field out of its range, an unsupported parameter, text "
    "that is not UTF-8, a prompt too long for the model, ...); `message` says which and why.",
    401: "No bearer token, or not this server's.",
    404: "No such model, file, job or adapter on this server.",
    413: "The upload is over 512 MB.",
    429: "The server is busy: too many requests are waiting to generate. Retry after the "
    "seconds in Retry-After.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting `statuses` as answered with an ErrorResponse."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        documented[status] = {"model": ErrorResponse, "description": MEANINGS[status]}
        if status == 429:
            documented[status]["headers"] = RETRY_AFTER
    return documented
