"""The coverage selector's set cover: examples chosen together to cover the parts of the message.

After Gupta, Gardner & Singh (2023), "Coverage-based Example Selection for In-Context Learning":
score a set of examples by how much of the message its tokens recall (their Set-BSR), and build
the set greedily, each step taking the example that adds the most not yet covered (the score is
submodular, so greedy is within a constant factor of the best set). The paper's tokens are
contextual BERT vectors matched softly; here they are the character trigrams of the message's
words, matched exactly (docs/design.md, "Selectors", says why): "seventy-one" is covered by a
"seventy-…" and a "…-one", "dreiundzwanzig" by a "…undzwanzig" and a "drei…".
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
GRAM = 3  # characters per feature, word boundaries marked


def features(text: str) -> frozenset[str]:
    """The character trigrams of each word of `text`, case-folded, with "<" and ">" marking the
    word's start and end (so a word's beginning and ending count as parts of their own)."""
    found: set[str] = set()
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        marked = f"<{word}>"
        found.update(marked[i : i + GRAM] for i in range(max(len(marked) - GRAM + 1, 1)))
    return frozenset(found)


def cover(query: frozenset[str], candidates: list[frozenset[str]], k: int) -> list[int]:
    """Greedy maximum coverage: up to k positions into `candidates`, each adding the most of
    `query` not yet covered; ties go to the earlier candidate (the more similar one, as the
    shortlist comes best first). Once nothing more can be covered the rest follow in shortlist
    order, so the set is as large as asked for, and the same input always gives the same set."""
    left = set(query)
    chosen: list[int] = []
    remaining = list(range(len(candidates)))
    while remaining and len(chosen) < k:
        gains = [len(left & candidates[i]) for i in remaining]
        best = max(range(len(remaining)), key=lambda j: (gains[j], -j))
        if gains[best] == 0:
            chosen.extend(remaining[: k - len(chosen)])
            break
        position = remaining.pop(best)
        chosen.append(position)
        left -= candidates[position]
    return chosen
