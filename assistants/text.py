"""Text the core stores must be text every later step can take: SQLite, the content hash, the
tokenizer and the embedder all encode it as UTF-8, which a lone surrogate (U+D800-U+DFFF) cannot
be. Such code points come from JSON escapes like "\\ud800" and from command-line arguments that
are not valid UTF-8 (Python keeps their bytes as surrogates). They are refused where the text
enters, naming the field, before anything is stored."""

from __future__ import annotations

import re

from assistants.errors import InvalidInput

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, what: str) -> str:
    """`text` unchanged, or InvalidInput naming `what` when it is not valid Unicode text."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise InvalidInput(
            f"{what}: character {found.start() + 1} (U+{ord(found.group()):04X}) is not valid "
            "UTF-8 text; send it as UTF-8."
        )
    return text
