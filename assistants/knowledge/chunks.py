"""Sections into chunks the embedder reads whole: at most CHUNK_TOKENS word pieces (MiniLM reads
256, two of them its own markers), measured with the embedder's own tokenizer, split at
paragraphs, then sentences, then words, with a little overlap between neighbours, each chunk
keeping its section's location.

Word pieces add up: the tokenizer splits at whitespace and punctuation first, so the pieces of
units joined by whitespace are the pieces of each unit. Each unit is counted once and a chunk's
size is the sum, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistants.knowledge.extract import Section

CHUNK_TOKENS = 200  # of the 254 MiniLM reads: room for a CSV header's lead
OVERLAP_TOKENS = 32  # the end of one chunk starts the next, so a sentence cut at a border is whole
# in one of them

Counter = Callable[[list[str]], list[int]]  # Embedder.count_tokens

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class Piece:
    """One chunk's text and where in its file it is."""

    location: str
    text: str


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    joiner: str  # what goes before it in a chunk: a paragraph break or a space


def chunk(sections: Sequence[Section], count: Counter) -> list[Piece]:
    """The chunks of a document's sections, in order. No chunk crosses a section's border."""
    pieces: list[Piece] = []
    for section in sections:
        lead, text = section.lead, section.text
        lead_tokens = count([lead])[0] if lead else 0
        if lead_tokens > CHUNK_TOKENS // 2:  # a lead that long would crowd out the text: once
            lead, text, lead_tokens = "", f"{lead}\n\n{text}", 0
        budget = CHUNK_TOKENS - lead_tokens
        for packed in _pack(_units(text, budget, count), budget):
            body = f"{lead}\n{packed}" if lead else packed
            pieces.append(Piece(section.location, body))
    return pieces


def _units(text: str, budget: int, count: Counter) -> list[_Unit]:
    """The section as paragraphs, each too long one as sentences, each too long one as runs of
    words, each too long word in parts: units of at most `budget` word pieces."""
    units: list[_Unit] = []
    paragraphs = [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
    for paragraph, tokens in zip(paragraphs, count(paragraphs), strict=True):
        if tokens <= budget:
            units.append(_Unit(paragraph, tokens, "\n\n"))
            continue
        sentences = [s for s in _SENTENCE.split(paragraph) if s]
        joiner = "\n\n"
        for sentence, size in zip(sentences, count(sentences), strict=True):
            parts = [(sentence, size)] if size <= budget else _words(sentence, budget, count)
            for part, part_size in parts:
                units.append(_Unit(part, part_size, joiner))
                joiner = " "
    return units


def _words(sentence: str, budget: int, count: Counter) -> list[tuple[str, int]]:
    """A sentence too long for one chunk as runs of whole words; a word longer than a chunk
    (a long URL, a hash) is cut in parts, kept apart by a space so that the counts still add up."""
    words: list[str] = []
    for word in sentence.split():
        words.extend(_cut(word, budget, count))
    runs: list[tuple[str, int]] = []
    run: list[str] = []
    size = 0
    for word, tokens in zip(words, count(words), strict=True):
        if run and size + tokens > budget:
            runs.append((" ".join(run), size))
            run, size = [], 0
        run.append(word)
        size += tokens
    if run:
        runs.append((" ".join(run), size))
    return runs


def _cut(word: str, budget: int, count: Counter) -> list[str]:
    if count([word])[0] <= budget:
        return [word]
    half = len(word) // 2
    return _cut(word[:half], budget, count) + _cut(word[half:], budget, count)


def _pack(units: list[_Unit], budget: int) -> list[str]:
    """Units into chunks of at most `budget` word pieces; each chunk after the first begins with
    the last units of the one before, up to OVERLAP_TOKENS of them."""
    chunks: list[str] = []
    current: list[_Unit] = []
    size = 0
    for unit in units:
        if current and size + unit.tokens > budget:
            chunks.append(_join(current))
            carried: list[_Unit] = []
            carried_size = 0
            for previous in reversed(current[1:]):  # never the whole chunk again
                if carried_size + previous.tokens > OVERLAP_TOKENS:
                    break
                carried.insert(0, previous)
                carried_size += previous.tokens
            if carried_size + unit.tokens > budget:
                carried, carried_size = [], 0
            current, size = carried, carried_size
        current.append(unit)
        size += unit.tokens
    if current:
        chunks.append(_join(current))
    return chunks


def _join(units: list[_Unit]) -> str:
    return units[0].text + "".join(u.joiner + u.text for u in units[1:])
