"""storage.batching: calls that arrive together run as one batch, each caller gets its own
result, and a failing batch fails each of its callers."""

from __future__ import annotations

import threading
import time

import pytest

from storage.batching import Batcher


def run_together(batcher: Batcher, items: list) -> dict:
    """Call the batcher from one thread per item, all released at once; item -> outcome."""
    outcomes: dict = {}
    start = threading.Barrier(len(items))

    def call(item) -> None:
        start.wait()
        try:
            outcomes[item] = batcher(item)
        except Exception as exc:  # collected for the test to look at
            outcomes[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_calls_share_batches_and_get_their_own_results():
    batches: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        batches.append(items)
        time.sleep(0.05)  # while this batch runs, the other callers queue up
        return [i * i for i in items]

    outcomes = run_together(Batcher(square), list(range(16)))
    assert outcomes == {i: i * i for i in range(16)}
    assert sorted(i for batch in batches for i in batch) == list(range(16)), "each item once"
    assert len(batches) < 16, "callers that arrived together were batched"


def test_a_lone_call_is_a_batch_of_one():
    batches: list[list[str]] = []
    batcher = Batcher(lambda items: batches.append(items) or [s.upper() for s in items])
    assert batcher("a") == "A" and batcher("b") == "B"
    assert batches == [["a"], ["b"]]


def test_a_failing_batch_fails_every_caller_in_it_and_the_next_batch_runs():
    failing = threading.Event()
    failing.set()

    def work(items: list[int]) -> list[int]:
        time.sleep(0.05)
        if failing.is_set():
            raise ValueError("index unavailable")
        return items

    batcher = Batcher(work)
    outcomes = run_together(batcher, list(range(8)))
    assert all(isinstance(o, ValueError) for o in outcomes.values())
    failing.clear()
    assert batcher(3) == 3


def test_work_giving_the_wrong_number_of_results_is_an_error_not_a_mixup():
    batcher = Batcher(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="a batch of 1 gave 0 results"):
        batcher(1)
