"""The server's text assembly: incremental decoding gives exactly what one whole decode gives,
and holds back text that may grow into a stop string."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from training.serving.decoding import TextAssembler

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "Hello, world! The answer is 42.",
    "quarante-deux → 42; восемьдесят два → 82; 四十四 → 44; مائة → 100",
    "Emoji split over tokens: 👩‍👩‍👧 🇫🇷 and ✨ done.",
    "  leading spaces,\nnew lines\n\n and tabs\tstay.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from training.base_models import embedded_gguf

    gguf = embedded_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def assemble(tokenizer: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    assembler = TextAssembler(tokenizer, stop)
    deltas = []
    for token in ids:
        deltas.append(assembler.add(token))
        if assembler.stopped:
            break
    deltas.append(assembler.finish())
    return "".join(deltas), deltas


@pytest.mark.parametrize("text", TEXTS)
def test_the_deltas_join_to_the_whole_decode(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    joined, deltas = assemble(tokenizer, ids)
    assert joined == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in d for d in deltas)  # no half character is ever shown


def test_random_token_runs_match_the_whole_decode(tokenizer: Any) -> None:
    rng = random.Random(7)
    special = tokenizer.eos_token_id
    for _ in range(30):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 60))]
        ids.insert(rng.randrange(len(ids) + 1), special)  # special tokens decode to nothing
        joined, _ = assemble(tokenizer, ids)
        assert joined == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_stop_string_cuts_the_text_and_is_never_shown(tokenizer: Any) -> None:
    ids = tokenizer.encode("One, two. END three", add_special_tokens=False)
    joined, deltas = assemble(tokenizer, ids, stop=("END",))
    assert joined == "One, two. "
    assert not any("E" in d for d in deltas)  # the stop string's start was held back, not shown


def test_each_token_costs_the_same_however_long_the_answer(tokenizer: Any) -> None:
    """Decoding is windowed: the tokenizer sees a few tokens per step, not the whole answer."""
    seen: list[int] = []

    class Counting:
        def decode(self, ids: list[int], **kwargs: Any) -> str:
            seen.append(len(ids))
            return str(tokenizer.decode(ids, **kwargs))

    ids = tokenizer.encode("word " * 2000, add_special_tokens=False)
    assembler = TextAssembler(Counting())
    text = "".join(assembler.add(t) for t in ids) + assembler.finish()
    assert text == "word " * 2000
    assert max(seen) <= 4
