"""Routes /v1/files: upload (purpose `fine-tune`, chat JSONL checked on upload), list, retrieve,
delete and content, as the OpenAI Files API has them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from training.api_errors import APIError
from training.finetune.multipart import MultipartError, parse_form
from training.finetune.store import FineTuneStore, file_body, page_body
from training.trainer.chat_data import DatasetError, validate_chat_jsonl

router = APIRouter(prefix="/v1/files")

PURPOSE = "fine-tune"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def store_of(request: Request) -> FineTuneStore:
    return request.app.state.finetune.store


def check_limit(limit: int, most: int = 100) -> int:
    if not 1 <= limit <= most:
        raise APIError(400, f"limit must be from 1 to {most}.", code="invalid_limit")
    return limit


@router.post("")
async def upload_file(request: Request) -> dict[str, Any]:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_UPLOAD_BYTES:
        raise APIError(413, "The file is too large: at most 512 MB.", code="file_too_large")
    body = await request.body()
    try:
        form = parse_form(request.headers.get("content-type", ""), body)
    except MultipartError as error:
        raise APIError(400, f"Invalid upload: {error}.", code="invalid_request") from None
    purpose = form.get("purpose")
    upload = form.get("file")
    if upload is None or upload.filename is None:
        raise APIError(400, "Invalid upload: the form has no file part.", code="invalid_request")
    purpose_text = purpose.data.decode("utf-8", "replace").strip() if purpose else ""
    if purpose_text != PURPOSE:
        raise APIError(
            400,
            f"Invalid purpose {purpose_text!r}: this server accepts only 'fine-tune' files.",
            code="invalid_purpose",
        )
    try:
        examples = await asyncio.to_thread(validate_chat_jsonl, upload.data)
    except DatasetError as error:
        where = f"Line {error.line}" if error.line is not None else "The file"
        raise APIError(
            400,
            f"Invalid file format for fine-tuning: {where}: {error.reason}.",
            code="invalid_file_format",
        ) from None
    filename = upload.filename.replace("/", "_").replace("\\", "_")[:255] or "upload.jsonl"
    row = await asyncio.to_thread(
        store_of(request).add_file, filename, PURPOSE, upload.data, len(examples)
    )
    return file_body(row)


@router.get("")
async def list_files(
    request: Request,
    after: str | None = None,
    limit: int = 100,
    purpose: str | None = None,
) -> dict[str, Any]:
    rows = store_of(request).list_files(after, check_limit(limit, 10_000), purpose)
    return page_body([file_body(row) for row in rows], limit)


def get_file_row(request: Request, file_id: str) -> dict[str, Any]:
    row = store_of(request).get_file(file_id)
    if row is None:
        raise APIError(404, f"No such file: {file_id}.", code="file_not_found")
    return row


@router.get("/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return file_body(get_file_row(request, file_id))


@router.delete("/{file_id}")
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    get_file_row(request, file_id)
    store_of(request).delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    row = get_file_row(request, file_id)
    data = await asyncio.to_thread(store_of(request).file_path(row["id"]).read_bytes)
    return Response(data, media_type="application/jsonl")
