"""Split a long reply into Discord messages (at most 2,000 characters) without breaking code blocks.

Lines are packed greedily; a split inside a ``` block closes the fence at the end of one part
and reopens it, with the same language, at the start of the next, so every part renders alone.
A single line longer than a part is cut at the last space that fits (or hard, if there is none).
"""

from __future__ import annotations

DISCORD_LIMIT = 2000
_CLOSE = "\n```"


def _cut_long_line(line: str, width: int) -> list[str]:
    pieces = []
    while len(line) > width:
        cut = line.rfind(" ", 0, width)
        cut = cut + 1 if cut > width // 2 else width
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Parts of `text`, each at most `limit` characters, code fences balanced in every part."""
    if limit < 40:
        raise ValueError("limit must leave room for code fences (at least 40 characters)")
    text = text.strip("\n")
    if len(text) <= limit:
        return [text] if text.strip() else []
    parts: list[str] = []
    current = ""
    fence: str | None = None  # the opening line of the code block open at the end of `current`
    width = limit - 2 * 16 - len(_CLOSE)  # room for a reopened fence (language names are short)
    for raw in text.split("\n"):
        stripped = raw.strip()
        toggles = stripped.startswith("```")
        for line in _cut_long_line(raw, width) if not toggles else [raw[:width]]:
            after = fence
            if toggles:
                after = None if fence is not None else stripped[:16]
            piece = ("\n" if current else "") + line
            reserve = len(_CLOSE) if after is not None else 0
            if current and len(current) + len(piece) + reserve > limit:
                parts.append(current + (_CLOSE if fence is not None else ""))
                current = fence if fence is not None else ""
                piece = ("\n" if current else "") + line
            current += piece
            fence = after
    if current.strip() and current != fence:
        parts.append(current + (_CLOSE if fence is not None else ""))
    return [p for p in parts if p.strip()]
