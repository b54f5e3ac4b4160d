"""Routes /v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints (OpenAI's
fine-tuning API), and the fewtune extension GET /v1/fine_tuning/jobs/{id}/adapter."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from training.api_errors import APIError, errors
from training.api_types import WholeNumber
from training.finetune.adapters import adapter_archive, fine_tuned_model_name
from training.finetune.files import page_limit, store_of
from training.finetune.hyperparameters import resolve_hyperparameters
from training.finetune.response_models import CheckpointList, Job, JobEventList, JobList
from training.finetune.store import (
    FINISHED,
    checkpoint_body,
    event_body,
    job_body,
    page_body,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs")

SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Number = int | float | Literal["auto"]


class HyperparametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    n_epochs: Number | None = None
    batch_size: Number | None = None
    learning_rate_multiplier: Number | None = None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class SupervisedIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hyperparameters: HyperparametersIn | None = None


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["supervised"]
    supervised: SupervisedIn | None = None


class TrainerOptions(BaseModel):
    """fewtune extension (`extra_body={"fewtune": {...}}`): trainer options a job may set."""

    model_config = ConfigDict(extra="forbid", strict=True)
    checkpoint_every: WholeNumber | None = Field(None, ge=0)
    keep_checkpoints: WholeNumber | None = Field(None, ge=1)
    max_steps: WholeNumber | None = Field(None, ge=1)
    eval_every: WholeNumber | None = Field(None, ge=1)
    valid_sample: WholeNumber | None = Field(None, ge=1)
    log_every: WholeNumber | None = Field(None, ge=1)
    max_seq_len: WholeNumber | None = Field(None, ge=16)
    lora_r: WholeNumber | None = Field(None, ge=1, le=1024)
    lora_alpha: WholeNumber | None = Field(None, ge=1)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    warmup: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] | None = None


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: WholeNumber | None = Field(None, ge=0, le=2**31 - 1)
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    fewtune: TrainerOptions | None = None


def _state(request: Request) -> Any:
    return request.app.state.finetune


def _job_row(request: Request, job_id: str) -> dict[str, Any]:
    row = store_of(request).get_job(job_id)
    if row is None:
        raise APIError(404, f"No such fine-tuning job: {job_id}.", code="job_not_found")
    return row


def _merged_hyperparameters(body: CreateJob) -> dict[str, Any]:
    """Method form and older top-level form together; the same key with two values is an error."""
    old = body.hyperparameters.given() if body.hyperparameters else {}
    new = {}
    if body.method and body.method.supervised and body.method.supervised.hyperparameters:
        new = body.method.supervised.hyperparameters.given()
    for key in set(old) & set(new):
        if old[key] != new[key]:
            raise APIError(
                400,
                f"hyperparameters.{key} is given twice with different values (top level and "
                "method.supervised.hyperparameters); give it once.",
                code="invalid_hyperparameters",
            )
    merged = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    return {**merged, **old, **new}


def _training_file(request: Request, file_id: str | None, param: str) -> dict[str, Any] | None:
    if file_id is None:
        return None
    row = store_of(request).get_file(file_id)
    if row is None:
        raise APIError(400, f"{param} {file_id!r} does not exist.", code="invalid_file")
    return row


@router.post("", response_model=None, responses={200: {"model": Job}, **errors(400, 404)})
async def create_job(body: CreateJob, request: Request) -> dict[str, Any]:
    engine = request.app.state.engine
    if not engine.is_base(body.model):
        engine.resolve(body.model)  # a model not served here: 404, as OpenAI answers
        raise APIError(
            400,
            f"Model {body.model!r} cannot be fine-tuned here: this server fine-tunes its base "
            f"model {engine.base_model!r}.",
            code="model_not_available",
        )
    training = _training_file(request, body.training_file, "training_file")
    assert training is not None
    _training_file(request, body.validation_file, "validation_file")
    if body.suffix is not None and (not SUFFIX.fullmatch(body.suffix) or ".." in body.suffix):
        raise APIError(
            400,
            "suffix must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            code="invalid_suffix",
        )
    requested = _merged_hyperparameters(body)
    try:
        resolve_hyperparameters(training["n_examples"], **requested)
    except ValueError as error:
        raise APIError(
            400, f"Invalid hyperparameters: {error}.", code="invalid_hyperparameters"
        ) from None
    if fine_tuned_model_name(engine.base_model, body.suffix, "ftjob-" + "x" * 24) is None:
        raise APIError(400, "suffix is too long for this base model's name.", code="invalid_suffix")
    options = body.fewtune.model_dump(exclude_none=True) if body.fewtune else {}
    row = store_of(request).add_job(
        {
            "model": engine.base_model,
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "suffix": body.suffix,
            "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
            "requested": requested,
            "options": options,
            "metadata": body.metadata,
        }
    )
    store_of(request).add_event(row["id"], f"Created fine-tuning job: {row['id']}")
    _state(request).worker.ensure_started()
    _state(request).worker.wake()
    return job_body(row)


@router.get("", response_model=None, responses={200: {"model": JobList}, **errors(400)})
async def list_jobs(
    request: Request, after: str | None = None, limit: int = page_limit(20)
) -> dict[str, Any]:
    rows = store_of(request).list_jobs(after, limit)
    return page_body([job_body(row) for row in rows], limit)


@router.get("/{job_id}", response_model=None, responses={200: {"model": Job}, **errors(404)})
async def retrieve_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_body(_job_row(request, job_id))


@router.post(
    "/{job_id}/cancel", response_model=None, responses={200: {"model": Job}, **errors(400, 404)}
)
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    row = _job_row(request, job_id)
    if row["status"] in ("succeeded", "failed"):
        raise APIError(
            400,
            f"Job {job_id} has already {row['status']}; it cannot be cancelled.",
            code="job_not_cancellable",
        )
    if row["status"] not in FINISHED:
        store = store_of(request)
        with store.one_step():
            if store.finish_job(
                job_id,
                "cancelled",
                ("validating_files", "queued", "running"),
                estimated_finish=None,
            ):
                store.add_event(job_id, "Job cancelled.")
        _state(request).worker.wake()
    return job_body(_job_row(request, job_id))


@router.get(
    "/{job_id}/events",
    response_model=None,
    responses={200: {"model": JobEventList}, **errors(400, 404)},
)
async def list_events(
    request: Request, job_id: str, after: str | None = None, limit: int = page_limit(20, 10_000)
) -> dict[str, Any]:
    _job_row(request, job_id)
    rows = store_of(request).list_events(job_id, after, limit)
    return page_body([event_body(row) for row in rows], limit)


@router.get(
    "/{job_id}/checkpoints",
    response_model=None,
    responses={200: {"model": CheckpointList}, **errors(400, 404)},
)
async def list_checkpoints(
    request: Request, job_id: str, after: str | None = None, limit: int = page_limit(10)
) -> dict[str, Any]:
    job = _job_row(request, job_id)
    name = fine_tuned_model_name(job["model"], job["suffix"], job_id) or job_id
    rows = store_of(request).list_checkpoints(job_id, after, limit)
    return page_body([checkpoint_body(row, name) for row in rows], limit)


@router.get(
    "/{job_id}/adapter",
    response_class=Response,
    responses={
        200: {"content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}},
        **errors(400, 404),
    },
)
async def download_adapter(request: Request, job_id: str) -> Response:
    """fewtune extension: the job's LoRA adapter (PEFT folder) as a .tar.gz."""
    job = _job_row(request, job_id)
    if job["status"] != "succeeded" or not job["fine_tuned_model"]:
        raise APIError(
            400,
            f"Job {job_id} has no adapter: it is {job['status']}, not succeeded.",
            code="adapter_not_ready",
        )
    settings = request.app.state.settings
    data = await asyncio.to_thread(adapter_archive, settings.adapters_path, job["fine_tuned_model"])
    if data is None:
        raise APIError(
            404,
            f"The adapter {job['fine_tuned_model']} is no longer on this server.",
            code="adapter_not_found",
        )
    filename = job["fine_tuned_model"].replace(":", "_") + ".tar.gz"
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
