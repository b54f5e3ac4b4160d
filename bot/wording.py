"""Small pieces of wording both frontends use: counts and file sizes."""

from __future__ import annotations


def counted(count: int, word: str) -> str:
    """`1 chunk`, `2 chunks`: a count with its noun (plural by a final s)."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def file_size(size: int) -> str:
    """Bytes as a person reads them: `89 B`, `10.9 kB`, `2.1 MB`."""
    if size < 1000:
        return f"{size} B"
    return f"{size / 1000:.1f} kB" if size < 1_000_000 else f"{size / 1_000_000:.1f} MB"
