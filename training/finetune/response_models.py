"""The response bodies of /v1/files and /v1/fine_tuning/jobs as pydantic models, for the
served OpenAPI schema. The routes return store.file_body, job_body, ... as they are;
tests/test_api_schema_fuzz.py checks that these models describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"]
    status_details: None
    expires_at: None


class FileList(BaseModel):
    object: Literal["list"]
    data: list[FileObject]
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: Literal[True]


JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class JobError(BaseModel):
    code: str | None = None
    message: str
    param: str | None = None


class Job(BaseModel):
    id: str
    object: Literal["fine_tuning.job"]
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None
    integrations: list[Any]
    metadata: dict[str, str] | None
    user_provided_suffix: str | None


class JobList(BaseModel):
    object: Literal["list"]
    data: list[Job]
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"]
    created_at: int
    level: str  # info, warning or error
    message: str
    type: str
    data: dict[str, Any] | None


class JobEventList(BaseModel):
    object: Literal["list"]
    data: list[JobEvent]
    has_more: bool


class Checkpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"]
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"]
    data: list[Checkpoint]
    has_more: bool
