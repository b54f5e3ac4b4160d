"""Routes /v1/files: upload (purpose `fine-tune`, chat JSONL checked on upload), list, retrieve,
delete and content, as the OpenAI Files API has them."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from training.api_errors import APIError, errors
from training.finetune.multipart import MultipartError, parse_form
from training.finetune.response_models import FileDeleted, FileList, FileObject
from training.finetune.store import FineTuneStore, file_body, page_body
from training.trainer.chat_data import DatasetError, validate_chat_jsonl

router = APIRouter(prefix="/v1/files")

PURPOSE = "fine-tune"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def store_of(request: Request) -> FineTuneStore:
    return request.app.state.finetune.store


def page_limit(default: int, most: int = 100) -> Any:
    """A list's `limit` query parameter: 1 to `most` (a 400 outside, documented in the schema)."""
    return Query(default, ge=1, le=most)


# The upload is read from the raw body (multipart.parse_form), so its form is documented here.
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": 'Chat JSONL: one {"messages": [...]} per line.',
                        },
                        "purpose": {"type": "string", "enum": [PURPOSE]},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    response_model=None,
    responses={200: {"model": FileObject}, **errors(400, 413)},
    openapi_extra=UPLOAD_FORM,
)
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


@router.get("", response_model=None, responses={200: {"model": FileList}, **errors(400)})
async def list_files(
    request: Request,
    after: str | None = None,
    limit: int = page_limit(100, 10_000),
    purpose: str | None = None,
) -> dict[str, Any]:
    rows = store_of(request).list_files(after, limit, purpose)
    return page_body([file_body(row) for row in rows], limit)


def get_file_row(request: Request, file_id: str) -> dict[str, Any]:
    row = store_of(request).get_file(file_id)
    if row is None:
        raise APIError(404, f"No such file: {file_id}.", code="file_not_found")
    return row


@router.get(
    "/{file_id}", response_model=None, responses={200: {"model": FileObject}, **errors(404)}
)
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return file_body(get_file_row(request, file_id))


@router.delete(
    "/{file_id}", response_model=None, responses={200: {"model": FileDeleted}, **errors(404)}
)
async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    get_file_row(request, file_id)
    store_of(request).delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get(
    "/{file_id}/content",
    response_class=Response,
    responses={
        200: {"content": {"application/jsonl": {"schema": {"type": "string"}}}},
        **errors(404),
    },
)
async def file_content(request: Request, file_id: str) -> Response:
    row = get_file_row(request, file_id)
    data = await asyncio.to_thread(store_of(request).file_path(row["id"]).read_bytes)
    return Response(data, media_type="application/jsonl")
