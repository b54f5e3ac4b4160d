"""The OpenAI fine-tuning API of `fewtune serve`: /v1/files and /v1/fine_tuning/jobs.

- `attach_finetuning(app, settings)`: add the routes to the server app and run the job worker
  with the app (started at startup, stopped at shutdown; also started by the first job).
- Files and jobs live in SQLite (`store`); jobs run one at a time, each in its own training
  process (`worker`, `run_job`); a finished job's adapter is published to
  FEWTUNE_HOME/adapters/ft:<base>:<suffix>:<job id>/ and served by that name at once.
- fewtune extensions: GET /v1/fine_tuning/jobs/{id}/adapter (the adapter as a .tar.gz) and the
  `fewtune` object in a job's body (trainer options such as checkpoint_every, max_steps, lora_r).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from storage.settings import Settings
from training.finetune.store import FineTuneStore
from training.finetune.worker import JobWorker

__all__ = ["FineTuning", "attach_finetuning"]


@dataclass
class FineTuning:
    """What the routes reach as `request.app.state.finetune`."""

    store: FineTuneStore
    worker: JobWorker


def attach_finetuning(app: Any, settings: Settings) -> FineTuning:
    """Include the fine-tuning routers in `app` and tie the job worker to its lifespan."""
    from training.finetune.files import router as files_router
    from training.finetune.jobs import router as jobs_router

    engine = app.state.engine
    store = FineTuneStore(settings)
    service = FineTuning(store, JobWorker(store, settings, engine.base_name))
    app.state.finetune = service
    app.include_router(files_router)
    app.include_router(jobs_router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running_app: Any) -> AsyncIterator[Any]:
        service.worker.ensure_started()  # resumes jobs a stopped or killed server left running
        try:
            async with inner(running_app) as state:
                yield state
        finally:
            await asyncio.to_thread(service.worker.stop)

    app.router.lifespan_context = lifespan
    return service
