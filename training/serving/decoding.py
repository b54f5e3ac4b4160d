"""Token-by-token decoding for the chat engine: sampling, steppers, stop strings.

Token by token (instead of `model.generate`) so that every token can be streamed as soon as it
exists, a cancelled request stops at the next token, and chats share steps
(training.serving.batching runs the loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (deterministic)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """One token id from the last position's logits (shape [vocab])."""
    if params.temperature <= 0:
        return int(logits.argmax())
    # Shifted so the largest logit is 0 and divided in float64: a tiny temperature (5e-324, found
    # by the schema fuzz) is 0 in float32, and 0/0 made the probabilities NaN (a 500).
    shifted = logits.double() - logits.max().double()
    probs = torch.softmax(shifted / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest set of tokens whose probability reaches top_p (always at least one).
        outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        sorted_probs[outside] = 0.0
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


class Stepper(Protocol):
    """Runs a model one step at a time: the prompt first, then each token generated."""

    def start(self, prompt_ids: list[int]) -> torch.Tensor:
        """Feed the prompt; the logits for the next token [vocab]."""
        ...

    def next(self, token: int) -> torch.Tensor:
        """Feed one generated token; the logits for the token after it."""
        ...


class TransformersStepper:
    """Any transformers causal LM (or peft model) with a DynamicCache."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = model
        self.device = device
        self.cache: Any = None

    def start(self, prompt_ids: list[int]) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=_config(self.model))  # updated in place by forward
        ids = torch.tensor([prompt_ids], device=self.device)
        return self.model(input_ids=ids, cache=self.cache, use_cache=True, logits_to_keep=1).logits[
            0, -1
        ]

    def next(self, token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=self.device)
        return self.model(input_ids=ids, cache=self.cache, use_cache=True).logits[0, -1]


def _config(model: Any) -> Any:
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


class TextAssembler:
    """Turns generated token ids into text deltas, holding back what could start a stop string.

    Decoding is incremental, with a window (the way vLLM and transformers' TextStreamer do it):
    only the tokens since the last complete text are decoded, together with a few before them,
    so a leading space or a character split over several tokens comes out as a whole decode
    would give it, and each token costs the same however long the answer grows (decoding the
    whole completion every token made an 8,000-token answer take 100 times as long as 200). A
    window ending in U+FFFD is a character not complete yet: it waits for the next token.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._text = ""  # the text of every token up to `_read`
        self._prefix = 0  # where the decoding window starts
        self._read = 0  # the tokens before this are in `_text`
        self._emitted = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def _advance(self) -> None:
        """Move the complete text of the new tokens into `_text`."""
        window = self._decode(self._ids[self._prefix :])
        if window.endswith("\ufffd"):
            return
        before = self._decode(self._ids[self._prefix : self._read])
        if len(window) > len(before):
            self._text += window[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)

    def add(self, token: int) -> str:
        """Add one token; return the new text that is safe to show (may be empty)."""
        self._ids.append(token)
        self._advance()
        text = self._text
        hits = [
            i for i in (text.find(s, max(0, self._emitted - len(s))) for s in self._stop) if i >= 0
        ]
        if hits:
            self.stopped = True
            return self._emit(text, min(hits))
        end = len(text)
        hold = 0
        for s in self._stop:  # hold back a suffix that may grow into a stop string
            for n in range(min(len(s) - 1, end), 0, -1):
                if text[end - n : end] == s[:n]:
                    hold = max(hold, n)
                    break
        return self._emit(text, end - hold)

    def finish(self) -> str:
        """The text still held back when generation ends without a stop string (an incomplete
        last character included, shown as U+FFFD as a whole decode would)."""
        if self.stopped:
            return ""
        rest = self._decode(self._ids[self._prefix :])[
            len(self._decode(self._ids[self._prefix : self._read])) :
        ]
        text = self._text + rest
        return self._emit(text, len(text))

    def _emit(self, text: str, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        delta = text[self._emitted : upto]
        self._emitted = upto
        return delta

    @property
    def token_count(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[int, ...]:
        """The tokens added so far."""
        return tuple(self._ids)
