"""Knowledge in an exported assistant (`assistant export|import`): each file's record and its
chunks as stored, so an import needs no original file and no re-extraction, only embedding.
Import checks every field; a bad one refuses the whole file (ImportRejected)."""

from __future__ import annotations

import re
from typing import Any

from assistants.errors import FewtuneError, ImportRejected
from assistants.knowledge.chunks import Counter, Piece
from assistants.knowledge.extract import kind_of
from assistants.knowledge.knowledge import Knowledge, KnowledgeFile, Prepared
from assistants.text import check_text
from storage.embeddings import MAX_TOKENS

_SHA256 = re.compile(r"[0-9a-f]{64}")


def dump(knowledge: Knowledge, files: list[KnowledgeFile]) -> list[dict[str, Any]]:
    """The files with their chunks, JSON-ready."""
    return [
        {
            "name": f.name,
            "kind": f.kind,
            "size": f.size,
            "sha256": f.sha256,
            "chunks": [{"location": c.location, "text": c.text} for c in knowledge.chunks_of(f.id)],
        }
        for f in files
    ]


def load(items: object, count: Counter) -> list[Prepared]:
    """The files of an export's `knowledge` list, checked; chunks longer than the embedder
    reads are refused (`count`: Embedder.count_tokens)."""
    if not isinstance(items, list):
        raise ImportRejected("The file's 'knowledge' must be a list.")
    prepared = []
    for number, item in enumerate(items, start=1):
        where = f"Knowledge file {number} in the file"
        if not isinstance(item, dict):
            raise ImportRejected(f"{where} is not an object.")
        name, kind, size, digest, chunks = (
            item.get(k) for k in ("name", "kind", "size", "sha256", "chunks")
        )
        if not isinstance(name, str) or not name.strip():
            raise ImportRejected(f"{where} has no name.")
        try:
            check_text(name, where)
            if kind_of(name) != kind:
                raise ImportRejected(f"{where} ({name}) is not of kind {kind!r}.")
        except FewtuneError as exc:
            raise ImportRejected(str(exc)) from exc
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ImportRejected(f"{where} ({name}) has no valid size.")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ImportRejected(f"{where} ({name}) has no valid sha256.")
        if not isinstance(chunks, list) or not chunks:
            raise ImportRejected(f"{where} ({name}) has no chunks.")
        pieces = []
        for chunk in chunks:
            if not isinstance(chunk, dict):
                raise ImportRejected(f"{where} ({name}) has a chunk that is not an object.")
            location, text = chunk.get("location", ""), chunk.get("text")
            if not isinstance(location, str) or not isinstance(text, str) or not text.strip():
                raise ImportRejected(f"{where} ({name}) has a chunk without text.")
            try:
                check_text(text, f"{where} ({name})")
                check_text(location, f"{where} ({name})")
            except FewtuneError as exc:
                raise ImportRejected(str(exc)) from exc
            pieces.append(Piece(location, text))
        longest = max(count([p.text for p in pieces]))
        if longest > MAX_TOKENS - 2:
            raise ImportRejected(
                f"{where} ({name}) has a chunk of {longest} word pieces; the embedder reads "
                f"{MAX_TOKENS - 2}."
            )
        prepared.append(Prepared(name, kind, size, digest, pieces))
    return prepared
