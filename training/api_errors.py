"""The OpenAI-shaped errors of `fewtune serve`, shared by its two rooms (serving and finetune).

A route raises `APIError(status, message, ...)`; the app (training.serving.app) answers it as
{"error": {"message", "type", "code", "param"}} with that status. It lives here, not in the app,
so that the fine-tuning routes can raise it without importing the server that includes them.
"""

from __future__ import annotations

from typing import Any


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
