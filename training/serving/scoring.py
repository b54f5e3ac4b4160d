"""Log-probabilities of a token sequence under a model, and the text piece of each token.

Used by `/v1/completions` for `logprobs` (and `echo` with `max_tokens: 0`, the form evaluation
harnesses score a text with). One plain forward pass of the transformers (or peft) model over
the whole sequence, log-softmax in float32: the model's own distribution, never the sampling
temperature or top_p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Rows of logits turned into log-probabilities at a time: a 2,048-token text times a 49,152-token
# vocabulary is 400 MB in float32; chunks keep the extra memory to a small slice of it.
_ROWS = 256


@dataclass(frozen=True)
class TokenScores:
    """Per token: its log-probability given the tokens before it (None for the first token)
    and the `top` most likely tokens at its position, as (token id, log-probability)."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]]]


@dataclass(frozen=True)
class Scored:
    """A sequence scored for the API: each token's text piece, its log-probability (None for the
    first) and its top alternatives by piece (the token itself among them; {} for the first)."""

    pieces: list[str]
    logprobs: list[float | None]
    top: list[dict[str, float]]


def score_tokens(model: Any, ids: list[int], top: int, device: str = "cpu") -> TokenScores:
    """Each token's natural-log probability under `model`, and the `top` alternatives."""
    with torch.inference_mode():
        # The logits at position i predict token i + 1; the last position predicts nothing here.
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1]
        targets = torch.tensor(ids[1:], device=logits.device)
        logprobs: list[float | None] = [None]
        alternatives: list[list[tuple[int, float]]] = [[]]
        for start in range(0, len(ids) - 1, _ROWS):
            rows = torch.log_softmax(logits[start : start + _ROWS].float(), dim=-1)
            chosen = rows.gather(1, targets[start : start + _ROWS, None])[:, 0]
            logprobs.extend(float(x) for x in chosen.cpu())
            if top:
                values, indices = rows.topk(top, dim=-1)
                alternatives.extend(
                    list(zip(i.tolist(), v.tolist(), strict=True))
                    for i, v in zip(indices.cpu(), values.cpu(), strict=True)
                )
            else:
                alternatives.extend([] for _ in range(len(chosen)))
    return TokenScores(logprobs, alternatives)


def prompt_tokens(tokenizer: Any, prompt: str | list[int]) -> tuple[list[int], str, int]:
    """A completions prompt's tokens, its text, and how many tokens the tokenizer put before the
    text (its start token: context, not part of the text). ValueError for an unknown token id."""
    if not isinstance(prompt, str):
        vocab = len(tokenizer)
        bad = next((i for i in prompt if not 0 <= i < vocab), None)
        if bad is not None:
            raise ValueError(f"Token id {bad} is not in the vocabulary (0 to {vocab - 1}).")
        text = tokenizer.decode(prompt, clean_up_tokenization_spaces=False)
        return list(prompt), str(text), 0
    # The tokenizer's start token, unless the text already has it (a chat template's does),
    # so apply-template's text gets exactly the tokens chat feeds the model.
    start = list(tokenizer("", add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token
    if start and bos and prompt.startswith(bos):
        start = []
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return start + ids if ids else [], prompt, len(start)


def scored(tokenizer: Any, ids: list[int], scores: TokenScores, generated_from: int) -> Scored:
    """`scores` for the API: each token's piece and its alternatives by piece; the tokens from
    `generated_from` on were generated and decode without special tokens, as their text does."""
    pieces = token_pieces(tokenizer, ids[:generated_from]) + token_pieces(
        tokenizer, ids[generated_from:], skip_special_tokens=True
    )
    tops: list[dict[str, float]] = []
    for token, piece, logprob, alternatives in zip(
        ids, pieces, scores.logprobs, scores.top, strict=True
    ):
        if logprob is None:
            tops.append({})
            continue
        # The chosen token is always there under its piece (as vLLM reports it), so that
        # top[tokens[i]] works, then the `top` likeliest, each decoded alone.
        entry = {piece: logprob}
        for other, value in alternatives:
            key = str(tokenizer.decode([other]))
            if other != token and key != piece:
                entry[key] = max(value, entry.get(key, value))
        tops.append(entry)
    return Scored(pieces, scores.logprobs, tops)


def token_pieces(tokenizer: Any, ids: list[int], skip_special_tokens: bool = False) -> list[str]:
    """The text of each token, so that the pieces joined are the decoded text.

    Decoded a few tokens at a time (as vLLM's incremental detokenizer does): decoding a token
    alone loses a leading space in SentencePiece tokenizers and gives U+FFFD for part of a
    multi-byte character. A token that ends inside a character gets "" and the character goes
    to the token that completes it.
    """

    def decode(part: list[int]) -> str:
        return str(
            tokenizer.decode(
                part,
                skip_special_tokens=skip_special_tokens,
                clean_up_tokenization_spaces=False,
            )
        )

    pieces: list[str] = []
    prefix = read = 0  # decode from `prefix`; tokens before `read` have their text out
    for i in range(len(ids)):
        before = decode(ids[prefix:read])
        after = decode(ids[prefix : i + 1])
        if after.endswith("\ufffd") and i + 1 < len(ids):
            pieces.append("")  # not a whole character yet
            continue
        pieces.append(_new_text(before, after))
        prefix, read = read, i + 1
    return pieces


def _new_text(before: str, after: str) -> str:
    if after.startswith(before):
        return after[len(before) :]
    same = 0
    while same < min(len(before), len(after)) and before[same] == after[same]:
        same += 1
    return after[same:]


def offsets(pieces: list[str], start: int = 0) -> list[int]:
    """The character offset of each piece in their concatenation (plus `start`)."""
    result: list[int] = []
    at = start
    for piece in pieces:
        result.append(at)
        at += len(piece)
    return result
