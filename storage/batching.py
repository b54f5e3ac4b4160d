"""Calls that arrive together run together: one batch per turn, with no waiting added.

The embedder and the index each cost far less per item in a batch than alone (a 64-text batch
embeds at half the cost per text; a 64-vector chromadb query costs a twentieth of 64 single
ones), and every call into them hands Python's GIL over and back, which under a burst of
messages waits its turn each time (docs/benchmarks.md). A `Batcher` lets whichever caller gets
the worker next take every call that queued while the previous batch ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiter(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class Batcher(Generic[Item, Result]):
    """Runs `work(items) -> results` (one result per item, in order) for concurrent callers.

    A caller queues its item and takes the worker lock; if its item was not done meanwhile by
    the caller before it, it runs the whole queue as one batch. A failing batch fails every
    caller in it with the same exception. Thread-safe; a lone caller runs a batch of one.
    """

    def __init__(self, work: Callable[[list[Item]], Sequence[Result]]) -> None:
        self.work = work
        self.lock = threading.Lock()  # held while a batch runs
        self._queue_lock = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []

    def __call__(self, item: Item) -> Result:
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._queue_lock:
            self._queue.append(waiter)
        with self.lock:
            if not waiter.done.is_set():
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _run(self, batch: list[_Waiter[Item, Result]]) -> None:
        try:
            results = self.work([w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as exc:
            for w in batch:
                w.error = exc
                w.done.set()
            raise
        for w, result in zip(batch, results, strict=True):
            w.result = result
            w.done.set()
