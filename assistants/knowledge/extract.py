"""Text out of a knowledge file, in the document's own sections: a page of a PDF, the part under
a heading of Markdown or HTML, a group of CSV rows (with the header), a top-level JSON item.

Each format has one reader here. PDFs are read by pypdf (pure Python, maintained, no system
libraries); HTML by the standard library's parser (text and headings are all that is needed);
CSV and JSON by the standard library. Every refusal is one sentence naming the file and what to
do, raised as InvalidInput before anything is stored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath

from assistants.errors import InvalidInput
from assistants.text import check_text

log = logging.getLogger(__name__)

KINDS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".csv": "csv",
    ".json": "json",
}
CSV_ROWS = 20  # rows per CSV section; a section too long for one chunk is split further


@dataclass(frozen=True)
class Section:
    """A part of a document: where it is (page, heading path, rows, item; "" for the whole
    file), its text, and a lead repeated at the start of each of its chunks (a CSV header)."""

    location: str
    text: str
    lead: str = ""


@dataclass(frozen=True)
class Extracted:
    kind: str
    sections: list[Section] = field(default_factory=list)


def kind_of(name: str) -> str:
    """The kind of a file by its name's ending, or InvalidInput naming the kinds read."""
    kind = KINDS.get(PurePath(name).suffix.lower())
    if kind is None:
        raise InvalidInput(
            f"{name}: fewtune reads .txt, .md, .pdf, .html, .csv and .json files; "
            "save it as one of these and add it again."
        )
    return kind


def extract(name: str, data: bytes) -> Extracted:
    """The sections of one file, or InvalidInput saying why it cannot be read."""
    kind = kind_of(name)
    sections = [s for s in _READERS[kind](name, data) if s.text.strip()]
    if not sections:
        raise InvalidInput(f"{name} has no text to answer from; add a file that has some.")
    for section in sections:
        check_text(section.text, name)
    return Extracted(kind, sections)


def _decode(name: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name} is not UTF-8 text (byte {exc.start:,}); save it as UTF-8 and add it again."
        ) from exc
    if "\x00" in text:
        raise InvalidInput(f"{name} holds binary data, not text; add a text file instead.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text(name: str, data: bytes) -> list[Section]:
    return [Section("", _decode(name, data))]


# -- Markdown --------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _markdown(name: str, data: bytes) -> list[Section]:
    """Sections under ATX headings (`#` to `######`), each located by its heading path
    ("Install > Linux"); a heading inside a fenced code block is code, not a heading."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def close() -> None:
        sections.append(Section(" > ".join(t for _, t in path), "\n".join(lines)))
        lines.clear()

    for line in _decode(name, data).split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _ATX.match(line)
        if heading is None:
            lines.append(line)
            continue
        close()
        level, title = len(heading.group(1)), heading.group(2).strip()
        path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        lines.append(title)  # the heading's words help the chunk be found
    close()
    return sections


# -- HTML ------------------------------------------------------------------------------------

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIPPED = {"script", "style", "noscript", "template", "head", "svg"}
_BLOCKS = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote",
    "pre", "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "br", "hr", "figure", "figcaption",
    "form", "details", "summary",
}  # fmt: skip


class _HtmlText(HTMLParser):
    """Visible text split at headings; block elements end paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.parts: list[str] = []
        self.skipping = 0
        self.heading: list[str] | None = None
        self.level = 0

    def close_section(self) -> None:
        text = re.sub(r"\n\s*\n\s*", "\n\n", "".join(self.parts))
        self.sections.append(Section(" > ".join(t for _, t in self.path), text.strip()))
        self.parts = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        elif tag in _HEADINGS and not self.skipping:
            self.close_section()
            self.heading, self.level = [], _HEADINGS[tag]
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(self.skipping - 1, 0)
        elif tag in _HEADINGS and self.heading is not None:
            title = " ".join("".join(self.heading).split())
            self.path = [(lv, t) for lv, t in self.path if lv < self.level] + [(self.level, title)]
            self.parts.append(title + "\n\n")
            self.heading = None
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.heading is not None:
            self.heading.append(data)
        else:
            self.parts.append(data)


def _html(name: str, data: bytes) -> list[Section]:
    parser = _HtmlText()
    parser.feed(_decode(name, data))
    parser.close()
    parser.close_section()
    return parser.sections


# -- PDF -------------------------------------------------------------------------------------


def _pdf(name: str, data: bytes) -> list[Section]:
    """One section per page of the PDF's text layer. An encrypted PDF is read only when it opens
    with an empty password (a common "owner password only" file); a PDF with no text on any
    page is a scan and needs OCR first."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise InvalidInput(
                f"{name} is encrypted with a password; save an unprotected copy and add that."
            )
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(f"page {number}", text))
    except InvalidInput:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        # pypdf raises several kinds on a damaged file; each means "cannot be read".
        log.info("cannot read PDF %s: %r", name, exc)
        raise InvalidInput(
            f"{name} is not a readable PDF ({type(exc).__name__}); export it again and add it."
        ) from exc
    if not sections:
        raise InvalidInput(
            f"{name} has no text layer (a scanned PDF?); run OCR on it or add its text instead."
        )
    return sections


def _opens_without_password(reader: object) -> bool:
    from pypdf import PasswordType
    from pypdf.errors import DependencyError

    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED  # type: ignore[attr-defined]
    except DependencyError:  # AES needs the optional `cryptography`: treat as locked
        return False


# -- CSV -------------------------------------------------------------------------------------


def _csv(name: str, data: bytes) -> list[Section]:
    """Rows in groups of CSV_ROWS, each group led by the header so a chunk says what its values
    mean; located by their line numbers in the file (the header is line 1)."""
    text = _decode(name, data)
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise InvalidInput(f"{name} is not valid CSV ({exc}); fix it and add it again.") from exc
    if not rows:
        return []
    header, body = _csv_line(rows[0]), rows[1:]
    if not body:
        return [Section("", header)]
    sections = []
    for start in range(0, len(body), CSV_ROWS):
        group = body[start : start + CSV_ROWS]
        first, last = start + 2, start + 1 + len(group)
        where = f"row {first}" if first == last else f"rows {first}-{last}"
        sections.append(Section(where, "\n".join(_csv_line(r) for r in group), lead=header))
    return sections


def _csv_line(row: list[str]) -> str:
    return ", ".join(cell.strip() for cell in row)


# -- JSON ------------------------------------------------------------------------------------


def _json(name: str, data: bytes) -> list[Section]:
    """A top-level list: one section per item ("item 3"); an object: one per key; else one."""
    text = _decode(name, data)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidInput(f"{name} is not valid JSON{where}; fix it and add it again.") from exc
    if isinstance(value, list):
        return [Section(f"item {i}", _json_text(v)) for i, v in enumerate(value, start=1)]
    if isinstance(value, dict):
        return [Section(str(k), f"{k}: {_json_text(v)}") for k, v in value.items()]
    return [Section("", _json_text(value))]


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=1)


_READERS: dict[str, Callable[[str, bytes], list[Section]]] = {
    "txt": _text,
    "md": _markdown,
    "pdf": _pdf,
    "html": _html,
    "csv": _csv,
    "json": _json,
}
