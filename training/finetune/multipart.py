"""Read a multipart/form-data body (the upload of /v1/files) with the standard library.

The email parser handles what HTTP clients send (httpx in the openai client, curl -F), so the
server needs no extra package for its one upload route.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    data: bytes


class MultipartError(ValueError):
    """The body is not multipart/form-data that can be read."""


def parse_form(content_type: str, body: bytes) -> dict[str, Part]:
    """The form's parts by field name (the first of each name wins)."""
    if (
        not content_type.lower().startswith("multipart/form-data")
        or "boundary=" not in content_type
    ):
        raise MultipartError("the request must be multipart/form-data with a file and a purpose")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise MultipartError("the multipart body cannot be read")
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or name in parts:
            continue
        data = part.get_payload(decode=True)
        parts[name] = Part(name, part.get_filename(), data if isinstance(data, bytes) else b"")
    return parts
