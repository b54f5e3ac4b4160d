"""`fewtune serve`: the OpenAI-compatible chat server (FastAPI + uvicorn) over a ChatEngine;
chat, legacy completions (with logprobs, to score texts) and apply-template.

- `create_app(settings, token, engine=None)` (training.serving.app): the ASGI app; add routers with
  `app.include_router`, reach the engine as `request.app.state.engine`.
- `serve(settings, host=None, port=None, idle_timeout=None, token=None)` (training.serving.run):
  run it, advertising FEWTUNE_HOME/server.json.
- `python -m training.serving --port 0 --idle-timeout 900`: what the on-demand start runs.

Imports stay lazy here so importing the package never loads torch or FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.serving.app import create_app
    from training.serving.run import serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from training.serving.app import create_app

        return create_app
    if name == "serve":
        from training.serving.run import serve

        return serve
    raise AttributeError(name)
