"""Generation that stops when nobody listens, and a bounded queue with 429 (issue 12), with the
real openai client against a real `fewtune serve` on the tiny model.

A long generation: greedy decoding of "Say hello." on the tiny random Llama never writes its end
token (8,000 tokens measured), so a request for 6,000 tokens runs for about half a minute here
unless stopped (the tests need a few seconds of it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from discord_fake.world import create_assistant, wait_answer
from server_fixtures import make_tiny_model, serving, write_settings
from test_cli import error_line, ok

from storage.settings import SettingsError, load_settings
from training.serving.engine import ChatEngine

TOKEN = "cancel-token"
HELLO = [{"role": "user", "content": "Say hello."}]
LONG: dict[str, Any] = {
    "model": "tiny-llama",
    "messages": HELLO,
    "temperature": 0,
    "max_tokens": 6_000,
}
MAX_WAIT_S = 2
LONGEST = 8_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-llama", max_position_embeddings=8_192
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    settings = write_settings(
        tmp_path_factory.mktemp("home"),
        model=str(tiny_model),
        max_tokens_limit=LONG["max_tokens"],
        max_batch=1,  # one row: the second request waits, the third is refused
        max_waiting=1,
        max_wait_s=MAX_WAIT_S,
    )
    with serving(settings, TOKEN) as (base_url, app):
        yield base_url, app


@pytest.fixture
def engine(served) -> ChatEngine:
    return served[1].state.engine


def client_of(base_url: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=TOKEN, max_retries=0, timeout=timeout)


@pytest.fixture
def client(served) -> openai.OpenAI:
    return client_of(served[0])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def generating(engine: ChatEngine, window: float = 0.2) -> bool:
    """Whether the engine wrote tokens within `window` seconds."""
    before = engine.tokens_generated
    time.sleep(window)
    return engine.tokens_generated > before


def first_words(stream: Any) -> None:
    """Read a stream up to its first text: its request now holds the engine, generating."""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            return
    raise AssertionError("the stream ended without text")


def stops_within(engine: ChatEngine, seconds: float) -> bool:
    """Whether the engine stops writing tokens (none for 0.1 s) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not generating(engine, 0.1):
            return True
    return False


def quick_answer_seconds(client: openai.OpenAI) -> float:
    """How long a 2-token request takes to be answered."""
    start = time.monotonic()
    reply = client.chat.completions.create(
        model="tiny-llama", messages=HELLO, temperature=0, max_tokens=2
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    return time.monotonic() - start


def test_a_dropped_request_frees_the_engine_within_a_second(served, engine, client) -> None:
    before = engine.tokens_generated
    with pytest.raises(openai.APITimeoutError):
        client_of(served[0], timeout=1.5).chat.completions.create(**LONG)
    assert engine.tokens_generated > before  # it was generating when its client left
    assert stops_within(engine, 1.0)
    assert engine.tokens_generated - before < LONG["max_tokens"]
    # 2-token answers take about 0.02 s alone, up to 0.5 s on this busy 2-core machine.
    assert quick_answer_seconds(client) < 2.0


def test_a_dropped_completions_request_stops_too(served, engine, client) -> None:
    before = engine.tokens_generated
    impatient = client_of(served[0], timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(
            model="tiny-llama", prompt="Say hello.", temperature=0, max_tokens=LONG["max_tokens"]
        )
    assert engine.tokens_generated > before
    assert stops_within(engine, 1.0)
    assert quick_answer_seconds(client) < 2.0


def test_a_stream_closed_by_its_client_frees_the_engine(client, engine) -> None:
    with client.chat.completions.create(**LONG, stream=True) as stream:
        for index, _ in enumerate(stream):
            if index == 20:
                break
    assert stops_within(engine, 1.0)
    assert quick_answer_seconds(client) < 2.0


def test_a_queued_request_whose_client_left_never_generates(served, engine, client) -> None:
    admission = served[1].state.admission
    with client.chat.completions.create(**LONG, stream=True) as running:
        first_words(running)
        began = engine.generations
        with pytest.raises(openai.APITimeoutError):  # waits behind the stream, then leaves
            client_of(served[0], timeout=0.5).chat.completions.create(**LONG)
        wait_until(lambda: admission.waiting == 0, 1.0, "the request to give up its place")
    assert quick_answer_seconds(client) < 2.0
    assert engine.generations == began + 1  # the 2-token answer; the abandoned one never ran


def test_past_the_queue_a_429_with_retry_after_and_a_bounded_wait(served, engine) -> None:
    base_url, app = served
    client = client_of(base_url)
    with client.chat.completions.create(**LONG, stream=True) as running:
        first_words(running)
        with ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            waiting = pool.submit(client.chat.completions.create, **LONG)
            wait_until(lambda: app.state.admission.waiting == 1, 5, "the request to queue")
            # The queue (max_waiting = 1) is full: 429 at once, in OpenAI's shape.
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                refused = http.post(f"{base_url}/chat/completions", json=LONG)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            error = refused.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
            assert "max_waiting" in error["message"] and "\n" not in error["message"]
            # As the served schema says, for every route that waits for the engine.
            root = base_url.removesuffix("/v1")
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                schema = http.get(f"{root}/openapi.json").json()
                answers = {
                    path: http.post(f"{root}{path}", json=body)
                    for path, body in (
                        ("/v1/chat/completions", LONG),
                        (
                            "/v1/completions",
                            {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2},
                        ),
                        ("/v1/apply-template", {"messages": HELLO}),
                    )
                }
            for path, answer in answers.items():
                documented = schema["paths"][path]["post"]["responses"]["429"]
                assert answer.status_code == 429 and "Retry-After" in documented["headers"]
                body_schema = documented["content"]["application/json"]["schema"]
                jsonschema.validate(
                    answer.json(), {**body_schema, "components": schema["components"]}
                )
            # What an openai client's user sees, streamed or not.
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(**LONG, stream=True)
            with pytest.raises(openai.RateLimitError):
                client.completions.create(model="tiny-llama", prompt="hi", max_tokens=2)
            # The queued request waits at most max_wait_s, then is told so.
            with pytest.raises(openai.RateLimitError) as waited:
                waiting.result(timeout=10)
            assert MAX_WAIT_S <= time.monotonic() - start < MAX_WAIT_S + 2
            assert "max_wait_s" in str(waited.value)
            assert waited.value.response.headers["Retry-After"].isdigit()
        assert generating(engine)  # the running stream went on meanwhile
    assert quick_answer_seconds(client) < 2.0


# -- what the frontends say when the local server is busy ---------------------------------------


@pytest.fixture
def busy(tmp_path: Path, tiny_model: Path):
    """A fresh `fewtune serve` with one row and no queue (max_waiting = 0) writing a long answer: any other
    request is a 429 at once, with Retry-After 1 (no turn has ended yet to go by). Its answer is
    the longest measured without an end token (about 50 s here), to outlast a slow CLI."""
    settings = write_settings(
        tmp_path / "busy-home",
        model=str(tiny_model),
        max_tokens_limit=LONGEST,
        max_batch=1,
        max_waiting=0,
    )
    with serving(settings, TOKEN) as (base_url, _):
        client = client_of(base_url)
        with client.chat.completions.create(
            **{**LONG, "max_tokens": LONGEST}, stream=True
        ) as running:
            first_words(running)
            yield base_url


def advertise_as_local(home: Path, base_url: str) -> None:
    """Make `base_url` the local model server of FEWTUNE_HOME `home`, as a running one records
    itself (server.json, server.token), so the `local` provider finds it."""
    info = {"pid": os.getpid(), "url": base_url}
    (home / "server.json").write_text(json.dumps(info), encoding="utf-8")
    (home / "server.token").write_text(TOKEN, encoding="utf-8")


BUSY = "The local model server is busy with other replies; try again in 1 second."


def test_the_cli_says_the_local_server_is_busy_in_one_line(cli, fewtune_home, busy) -> None:
    advertise_as_local(fewtune_home, busy)
    ok(
        cli(
            "assistant",
            "create",
            "helper",
            "--instructions",
            "Answer.",
            "--model",
            "local:tiny-llama",
        )
    )
    assert error_line(cli("ask", "helper", "hello")) == f"Error: {BUSY}"


async def test_discord_says_the_local_server_is_busy_in_the_reply(world, busy) -> None:
    advertise_as_local(world.core.settings.home, busy)
    await create_assistant(world, world.alice, "helper")
    world.core.assistants.edit(world.bot_actor(world.alice), "helper", model="local:tiny-llama")
    ix = await wait_answer(
        world,
        await world.fake.slash(
            "chat",
            user=world.bob,
            channel=world.channel,
            options={"assistant": "helper", "message": "anyone free?"},
        ),
    )
    assert BUSY in ix.original.content and "\n" not in ix.original.content.strip()


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("max_waiting = -1", "server.max_waiting must be 0 or more, not -1."),
        ("max_waiting = 2.5", "server.max_waiting must be a whole number, not 2.5."),
        ("max_wait_s = 0", "server.max_wait_s must be a number of seconds above 0, not 0."),
        ("max_wait_s = inf", "server.max_wait_s must be a number of seconds above 0, not inf."),
        ('max_wait_s = "long"', "server.max_wait_s must be a number, not 'long'."),
        ("max_batch = 0", "server.max_batch must be 1 to 64, not 0."),
        ("max_batch = 65", "server.max_batch must be 1 to 64, not 65."),
        ("max_batch = true", "server.max_batch must be a whole number, not True."),
        ("adapter_memory_mb = -1", "server.adapter_memory_mb must be 0 or more megabytes, not -1."),
        (
            "adapter_memory_mb = nan",
            "server.adapter_memory_mb must be 0 or more megabytes, not nan.",
        ),
        ('adapter_memory_mb = "big"', "server.adapter_memory_mb must be a number, not 'big'."),
    ],
)
def test_bad_queue_settings_are_one_sentence(tmp_path: Path, setting: str, said: str) -> None:
    (tmp_path / "fewtune.toml").write_text(f"[server]\n{setting}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        load_settings(tmp_path)
    assert str(raised.value) == f"fewtune.toml: {said}"
