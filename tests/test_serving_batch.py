"""Continuous batching in `fewtune serve`: chats decoded together answer as they would alone,
each with its own adapter, and a chat that leaves frees its row."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_fixtures import make_adapter, make_tiny_model, serving, write_settings

from training.serving.engine import ChatEngine, Sampling

TOKEN = "batch-token"
PROMPTS = [
    [{"role": "user", "content": "Say hello."}],
    [{"role": "system", "content": "You count."}, {"role": "user", "content": "One, two..."}],
    [
        {
            "role": "user",
            "content": "A much longer question, to give this chat a longer prompt "
            "than the others, so rows of different lengths share each step. " * 3,
        }
    ],
]
GREEDY = Sampling(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    settings = write_settings(tmp_path_factory.mktemp("home"), model=str(tiny_model))
    make_adapter(tiny_model, settings.adapters_path, "first", seed=1)
    make_adapter(tiny_model, settings.adapters_path, "second", seed=2, r=4)
    make_adapter(tiny_model, settings.adapters_path, "dora", seed=3, use_dora=True)
    engine = ChatEngine(settings)
    engine.load()
    yield engine
    engine.close()


async def alone(engine: ChatEngine, model: str, messages: list, sampling=GREEDY) -> tuple:
    return (await engine.chat(model, messages, sampling)).ids


async def together(engine: ChatEngine, chats: list[tuple[str, list]], sampling=GREEDY) -> list:
    results = await asyncio.gather(*(engine.chat(m, p, sampling) for m, p in chats))
    return [r.ids for r in results]


async def test_greedy_output_is_the_same_alone_and_in_a_batch(engine: ChatEngine) -> None:
    solo = [await alone(engine, "tiny-llama", p) for p in PROMPTS]
    widest = engine._batcher.widest
    batched = await together(engine, [("tiny-llama", p) for p in PROMPTS * 2])
    assert batched == solo * 2
    assert engine._batcher.widest >= 4 > widest  # they really shared steps
    assert len(set(solo)) == 3  # and the prompts gave different answers


async def test_each_row_gets_its_own_adapter(engine: ChatEngine) -> None:
    models = ["tiny-llama", "first", "second", "dora"]
    solo = {m: await alone(engine, m, PROMPTS[0]) for m in models}
    assert len(set(solo.values())) == 4  # each adapter changes the answer
    # Every adapter in one batch, twice over, in an order unlike their load order; DoRA is
    # served by peft, stepped beside the batch.
    chats = [(m, PROMPTS[0]) for m in ["second", "tiny-llama", "dora", "first"] * 2]
    batched = await together(engine, chats)
    assert batched == [solo[m] for m, _ in chats]


async def test_seeded_sampling_per_row(engine: ChatEngine) -> None:
    seeded = Sampling(max_tokens=16, temperature=1.0, seed=7)
    solo = await alone(engine, "first", PROMPTS[1], seeded)
    batched = await together(
        engine, [("first", PROMPTS[1]), ("tiny-llama", PROMPTS[0])] * 2, seeded
    )
    assert batched[0] == batched[2] == solo


async def test_a_stream_that_stops_frees_its_row(engine: ChatEngine) -> None:
    long = Sampling(max_tokens=400, temperature=1.0, seed=1)
    other = asyncio.create_task(
        engine.chat("first", PROMPTS[1], Sampling(max_tokens=60, temperature=0))
    )
    chat = await engine.prepare("tiny-llama", PROMPTS[0], long)
    async with contextlib.aclosing(engine.stream(chat)) as deltas:
        async for index, _ in _enumerate(deltas):
            if index == 5:
                break
    before = engine.tokens_generated
    deadline = time.monotonic() + 5
    while engine._batcher.running > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert engine._batcher.running <= 1  # only the other chat is left
    result = await other  # and it was not disturbed
    assert result.finish_reason in ("stop", "length")
    assert engine.tokens_generated - before < 100


async def _enumerate(items):
    index = 0
    async for item in items:
        yield index, item
        index += 1


def test_past_the_batch_and_the_queue_a_429(tmp_path: Path, tiny_model: Path) -> None:
    settings = write_settings(
        tmp_path / "home", model=str(tiny_model), max_batch=2, max_waiting=0, max_tokens_limit=4000
    )
    body = {
        "model": "tiny-llama",
        "messages": PROMPTS[0],
        "max_tokens": 4000,
        "stream": True,
        "temperature": 1.0,
        "seed": 1,
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        serving(settings, TOKEN) as (base_url, app),
        httpx.Client(headers=headers, timeout=60) as http,
        contextlib.ExitStack() as streams,
    ):
        lines = []
        for _ in range(2):  # two rows: both run at once
            response = streams.enter_context(
                http.stream("POST", f"{base_url}/chat/completions", json=body)
            )
            assert response.status_code == 200
            lines.append(response.iter_lines())
        for stream in lines:  # each has streamed a few tokens: both were decoding
            events = (line for line in stream if line.startswith("data:"))
            assert len([event for _, event in zip(range(5), events, strict=False)]) == 5
        refused = http.post(f"{base_url}/chat/completions", json=body)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "max_waiting" in refused.json()["error"]["message"]
        assert app.state.engine._batcher.widest == 2


async def test_adapters_past_the_memory_budget_are_evicted_and_reload(
    tmp_path: Path, tiny_model: Path
) -> None:
    # A budget smaller than one adapter: only the one used last stays held.
    settings = write_settings(tmp_path / "home", model=str(tiny_model), adapter_memory_mb=0.001)
    make_adapter(tiny_model, settings.adapters_path, "first", seed=1)
    make_adapter(tiny_model, settings.adapters_path, "second", seed=2, r=4)
    engine = ChatEngine(settings)
    engine.load()
    try:
        first = await alone(engine, "first", PROMPTS[0])
        second = await alone(engine, "second", PROMPTS[0])
        assert list(engine._fast_adapters) == ["second"]
        assert await alone(engine, "first", PROMPTS[0]) == first  # loaded again, same answer
        assert list(engine._fast_adapters) == ["first"]
        assert first != second
    finally:
        engine.close()


async def test_each_chat_logs_its_queue_time_and_first_token(
    engine: ChatEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="training.serving.batching"):
        await alone(engine, "first", PROMPTS[1])
    lines = [r.getMessage() for r in caplog.records if r.name == "training.serving.batching"]
    assert any(
        line.startswith("chat on first: queued ") and "first token after" in line for line in lines
    ), lines


async def test_a_chat_arriving_as_the_engine_closes_is_told_so(
    tmp_path: Path, tiny_model: Path
) -> None:
    engine = ChatEngine(write_settings(tmp_path / "home", model=str(tiny_model)))
    engine.load()
    chat = await engine.prepare("tiny-llama", PROMPTS[0], GREEDY)
    gate = threading.Event()
    engine._batcher.call(gate.wait)  # the thread is busy: a chat sent now waits to be admitted
    first = asyncio.ensure_future(anext(engine.stream(chat)))
    await asyncio.sleep(0.05)
    engine.close()
    gate.set()
    with pytest.raises(RuntimeError, match="shutting down"):
        await asyncio.wait_for(first, 10)
    with pytest.raises(RuntimeError, match="shutting down"):  # and one sent after
        await anext(engine.stream(chat))
