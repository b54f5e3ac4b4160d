"""Continuous batching: the engine's one thread answers every running chat together.

Decoding on a CPU is bound by reading the weights, so a step for eight chats costs little more
than a step for one: the chats that run share each step. The engine's thread runs this loop:

1. the calls waiting for the thread (tokenizing, scoring, loading) run first, in order;
2. each chat whose next-token logits are ready samples its token (its own temperature, top_p,
   seed) and streams it; one that ended (end token, stop string, max_tokens) or whose client left
   gives up its row at once;
3. one step (`FastLlama.step`) feeds every other chat its token, each row with its own adapter,
   and a chunk of a newcomer's prompt in the same matrix products (newcomers one at a time, in
   arrival order), so a long prompt never stalls the others for more than a chunk.

Rows live in the fast decoder's cache slots 0..n-1 (the chat being prefilled in slot n), so a
step reads the cache through views; a chat that leaves is replaced by the last one (`move`). A
model only transformers can run (an adapter the fast decoder refuses, or no fast decoder: the
GPU path today) is a `Stepper` row: it steps on its own, once a turn, beside the batch.

How many chats may run and wait is the routes' admission (training.serving.admission).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from training.serving.decoding import SamplingParams, Stepper, TextAssembler, sample_token
from training.serving.fast_llama import FastLlama, LoraAdapter

log = logging.getLogger(__name__)

PREFILL_CHUNK = 48  # prompt tokens fed in one step, beside the running chats' tokens


@dataclass(eq=False)
class Generation:
    """One chat being answered: its prompt, how it samples, and where its text goes.

    `send(text, finish, ids)` streams text; the last call has the finish reason ("stop" or
    "length") and the ids generated; `fail(exc)` ends it with an error. `cancel` set by the
    caller (its client left) frees the row at the next step, with no last call."""

    prompt: list[int]
    params: SamplingParams
    eos_ids: set[int]
    assembler: TextAssembler
    send: Callable[[str, str | None, tuple[int, ...]], None]
    fail: Callable[[BaseException], None]
    cancel: threading.Event
    adapter: LoraAdapter | None = None
    stepper: Stepper | None = None  # set when the fast decoder cannot run this model
    label: str = ""  # the model, for the log
    fed: int = 0  # prompt tokens in the cache
    logits: torch.Tensor | None = None  # for the next token, once the prompt is fed
    token: int | None = None  # the token to feed in the next step
    generated: int = 0
    arrived: float = 0.0  # handed to the engine (Batcher.add)
    started: float = 0.0  # its prompt began to be fed: "queued" in the log is the wait for it
    first_token: float = 0.0
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    def take(self) -> bool:
        """Sample the next token from `logits` and stream it; True when the answer is done."""
        assert self.logits is not None
        token = sample_token(self.logits.float().cpu(), self.params, self.generator)
        self.logits = None
        self.generated += 1
        if not self.first_token:
            self.first_token = time.monotonic()
        if token in self.eos_ids:
            self._end("stop", (token,))
            return True
        text = self.assembler.add(token)
        if text:
            self.send(text, None, ())
        if self.assembler.stopped:
            self._end("stop", ())
            return True
        if self.generated >= self.params.max_tokens:
            self._end("length", ())
            return True
        self.token = token
        return False

    def _end(self, finish: str, end: tuple[int, ...]) -> None:
        rest = self.assembler.finish()
        if rest:
            self.send(rest, None, ())
        self.send("", finish, self.assembler.ids + end)
        now = time.monotonic()
        log.info(
            "chat on %s: queued %.3f s, first token after %.3f s, %d tokens in %.2f s",
            self.label,
            self.started - self.arrived,
            self.first_token - self.arrived,
            self.generated,
            now - self.arrived,
        )


SHUTTING_DOWN = "The model server is shutting down; try again in a moment."
_Arrival = tuple[float, Callable[[], Generation], Callable[[BaseException], None]]


class Batcher:
    """The engine's thread: runs calls handed to it and decodes every admitted chat together."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[], None] | None = None,
    ) -> None:
        self._wake = threading.Condition()
        self._calls: collections.deque[tuple[Future[Any], Callable[[], Any]]] = collections.deque()
        # (arrival time, make, fail): fail tells the caller when its chat never begins
        self._arriving: collections.deque[_Arrival] = collections.deque()
        self._waiting: collections.deque[Generation] = collections.deque()  # not yet prefilling
        self._rows: list[Generation] = []  # decoding: row i in slot i of the decoder's cache
        self._filling: Generation | None = None  # being prefilled, in slot len(_rows)
        self._solo: list[Generation] = []  # stepped one by one (transformers)
        self._closed = False
        self.decoder: FastLlama | None = None  # set by the engine once the model is loaded
        self.generations = 0  # answers begun
        self.tokens_generated = 0
        self.widest = 0  # the most chats one decode step has run together
        # Hands what was streamed to the callers: once a turn after sampling, before the step
        # (a token reaches its caller a step sooner than after it), and after the turn.
        self._deliver = deliver or (lambda: None)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    # -- from any thread -----------------------------------------------------------------

    def call(self, function: Callable[[], Any]) -> Future[Any]:
        """Run `function` on this thread between two steps; its result as a Future."""
        future: Future[Any] = Future()
        if threading.current_thread() is self.thread:  # already here: run it now
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)
            return future
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._calls.append((future, function))
            self._wake.notify()
        return future

    def add(self, make: Callable[[], Generation], fail: Callable[[BaseException], None]) -> None:
        """Start a chat: `make` runs on this thread (it may load an adapter) and returns its
        Generation, which joins the batch at the next step. `fail` is told if it never gets
        there (the engine closing first)."""
        with self._wake:
            if self._closed:
                raise RuntimeError(SHUTTING_DOWN)
            self._arriving.append((time.monotonic(), make, fail))
            self._wake.notify()

    @property
    def running(self) -> int:
        """Chats admitted and not finished (decoding, prefilling or waiting for their prefill)."""
        return len(self._rows) + len(self._solo) + len(self._waiting) + (self._filling is not None)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._calls or self._arriving or self.running or self._closed):
                    self._wake.wait()
                if self._closed:
                    break
                calls, self._calls = list(self._calls), collections.deque()
                arriving, self._arriving = list(self._arriving), collections.deque()
            for future, function in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function())
                    except BaseException as exc:
                        future.set_exception(exc)
            for arrived, make, _ in arriving:
                self._admit(arrived, make)
            if self.running:
                self._turn()
            self._deliver()
        for future, _ in self._calls:
            future.cancel()
        gone = RuntimeError(SHUTTING_DOWN)
        filling = [self._filling] if self._filling is not None else []
        for generation in [*self._rows, *filling, *self._waiting, *self._solo]:
            generation.fail(gone)
        for _, _, fail in self._arriving:
            fail(gone)
        self._deliver()

    def _admit(self, arrived: float, make: Callable[[], Generation]) -> None:
        try:
            generation = make()
        except BaseException as exc:  # the adapter would not load, say: make reported it
            log.debug("a chat could not start: %s", exc)
            return
        if generation.cancel.is_set():  # its caller left before it began
            return
        generation.arrived = arrived
        self.generations += 1
        if generation.stepper is not None:
            generation.started = time.monotonic()  # it starts at the next step
            self._solo.append(generation)
        else:
            self._waiting.append(generation)

    def _turn(self) -> None:
        """One turn for every chat: sample what is ready, then one step (decode and a chunk)."""
        self._drop_cancelled()
        decoder = self.decoder
        if self._filling is None and self._waiting:
            assert decoder is not None
            self._filling = self._waiting.popleft()
            self._filling.started = time.monotonic()
            decoder.start(len(self._rows))
        for generation in [g for g in self._solo if g.logits is not None]:
            if self._sample(generation):
                self._solo.remove(generation)
        for generation in list(self._solo):
            self._solo_step(generation)
        for generation in [g for g in self._rows if g.logits is not None]:
            if self._sample(generation):
                self._remove(generation)
        self._deliver()
        if decoder is None or not (self._rows or self._filling):
            return
        chunk: list[int] = []
        filling = self._filling
        if filling is not None:
            chunk = filling.prompt[filling.fed : filling.fed + PREFILL_CHUNK]
        tokens = [g.token for g in self._rows if g.token is not None]
        assert len(tokens) == len(self._rows), "every decoding row has sampled its token"
        try:
            logits, last = decoder.step(
                tokens,
                [g.adapter for g in self._rows],
                chunk,
                filling.adapter if filling is not None else None,
            )
        except Exception as exc:  # a step failed: every chat in it fails, the thread lives on
            log.exception("decode step failed")
            for generation in [*self._rows, *([filling] if filling else [])]:
                generation.fail(exc)
            self._rows, self._filling = [], None
            return
        self.widest = max(self.widest, len(self._rows))
        for row, generation in enumerate(self._rows):
            generation.logits = logits[row]
        if filling is not None:
            filling.fed += len(chunk)
            if filling.fed == len(filling.prompt):
                filling.logits = last
                self._rows.append(filling)  # it was in slot len(_rows): now a row
                self._filling = None

    def _sample(self, generation: Generation) -> bool:
        """Its next token from its logits; True when it is done (answered, or failed)."""
        self.tokens_generated += 1
        try:
            return generation.take()
        except Exception as exc:
            generation.fail(exc)
            return True

    def _solo_step(self, generation: Generation) -> None:
        stepper = generation.stepper
        assert stepper is not None
        try:
            if generation.token is None:
                generation.logits = stepper.start(generation.prompt)
                return
            generation.logits = stepper.next(generation.token)
        except Exception as exc:
            generation.fail(exc)
            self._solo.remove(generation)

    def _drop_cancelled(self) -> None:
        for generation in [g for g in self._rows if g.cancel.is_set()]:
            self._remove(generation)
        self._solo = [g for g in self._solo if not g.cancel.is_set()]
        self._waiting = collections.deque(g for g in self._waiting if not g.cancel.is_set())
        if self._filling is not None and self._filling.cancel.is_set():
            self._filling = None

    def _remove(self, generation: Generation) -> None:
        """Free a decoding row: the last row takes its slot, the chat being prefilled moves down."""
        decoder = self.decoder
        assert decoder is not None
        row = self._rows.index(generation)
        last = len(self._rows) - 1
        if row != last:
            decoder.move(last, row)
            self._rows[row] = self._rows[last]
        self._rows.pop()
        if self._filling is not None:
            decoder.move(last + 1, last)
