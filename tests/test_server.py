"""`fewtune serve` over real HTTP: the real openai client against uvicorn on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from server_fixtures import make_adapter, make_tiny_model, serving, write_settings

from training.serving.engine import ChatEngine, Sampling

TOKEN = "test-token-123"
HELLO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    home = tmp_path_factory.mktemp("home")
    settings = write_settings(home, model=str(tiny_model))
    make_adapter(tiny_model, settings.adapters_path, "ft-tiny:v1")
    with serving(settings, TOKEN) as (base_url, app):
        yield base_url, settings, app.state.engine


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key=TOKEN, max_retries=0, timeout=60)


@pytest.fixture
def aclient(served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=served[0], api_key=TOKEN, max_retries=0, timeout=60)


def greedy(client: openai.OpenAI, model: str, max_tokens: int = 12) -> str:
    reply = client.chat.completions.create(
        model=model, messages=HELLO, temperature=0, max_tokens=max_tokens
    )
    return reply.choices[0].message.content or ""


def test_models_lists_base_and_adapters(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-llama", "ft-tiny:v1"]
    assert client.models.retrieve("tiny-llama").id == "tiny-llama"


def test_chat_non_stream_counts_tokens(client: openai.OpenAI, served) -> None:
    engine: ChatEngine = served[2]
    reply = client.chat.completions.create(
        model="tiny-llama", messages=HELLO, temperature=0, max_tokens=7
    )
    choice = reply.choices[0]
    assert reply.object == "chat.completion"
    assert reply.model == "tiny-llama"
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop")
    prompt = engine._prompt_ids(HELLO)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(prompt)
    assert 1 <= reply.usage.completion_tokens <= 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_stream_matches_non_stream_and_reports_usage(
    client: openai.OpenAI, aclient: openai.AsyncOpenAI
) -> None:
    expected = greedy(client, "tiny-llama", 10)
    stream = await aclient.chat.completions.create(
        model="tiny-llama",
        messages=HELLO,
        temperature=0,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usage = [], [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(pieces) == expected
    assert len(finishes) == 1
    assert usage is not None and 1 <= usage.completion_tokens <= 10


def test_sync_stream_without_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny-llama", messages=HELLO, stream=True, max_tokens=5, temperature=0
        )
    )
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy(client, "tiny-llama", 5)


def test_missing_or_wrong_token_is_401(served) -> None:
    base_url = served[0]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = httpx.get(f"{base_url}/models", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert error["message"].endswith(".")
    bad = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny-llama", messages=HELLO)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "tiny-llama"}, "messages"),
        ({"model": "tiny-llama", "messages": []}, "messages"),
        ({"model": "tiny-llama", "messages": HELLO, "temperature": 7}, "temperature"),
        ({"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ({"model": "tiny-llama", "messages": HELLO, "n": 3}, "n=1"),
        ({"model": "tiny-llama", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_body_is_400_with_one_sentence(served, body: dict, words: str) -> None:
    response = httpx.post(
        f"{served[0]}/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert words in message
    assert "Traceback" not in message and "\n" not in message


def test_invalid_json_is_400(served) -> None:
    response = httpx.post(
        f"{served[0]}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is not valid JSON."


def test_unknown_model_is_404_listing_served(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    message = caught.value.body["message"]  # type: ignore[index]
    assert "gpt-9" in message and "tiny-llama" in message and "ft-tiny:v1" in message


@pytest.mark.parametrize(
    "name", ["..", "../adapters/ft-tiny:v1", "ft-tiny:v1/../ft-tiny:v1", "/etc", "a..b", ".hidden"]
)
def test_path_like_model_names_are_refused(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=name, messages=HELLO)


def test_symlinked_adapter_outside_is_not_served(client: openai.OpenAI, served) -> None:
    settings = served[1]
    outside = settings.home / "elsewhere"
    (settings.adapters_path / "ft-tiny:v1").rename(outside)
    try:
        (settings.adapters_path / "linked").symlink_to(outside)
        assert "linked" not in [m.id for m in client.models.list().data]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="linked", messages=HELLO)
    finally:
        (settings.adapters_path / "linked").unlink()
        outside.rename(settings.adapters_path / "ft-tiny:v1")


def test_adapter_changes_answers_and_base_stays(client: openai.OpenAI) -> None:
    base_before = greedy(client, "tiny-llama")
    tuned = greedy(client, "ft-tiny:v1")
    base_after = greedy(client, "tiny-llama")
    assert tuned != base_before
    assert base_after == base_before
    assert greedy(client, "ft-tiny:v1") == tuned


def test_republished_adapter_is_reloaded(client: openai.OpenAI, served, tiny_model: Path) -> None:
    settings = served[1]
    make_adapter(tiny_model, settings.adapters_path, "ft-tiny:v2", seed=2)
    first = greedy(client, "ft-tiny:v2")
    time.sleep(0.01)  # a new mtime for the weights file
    make_adapter(tiny_model, settings.adapters_path, "ft-tiny:v2", seed=3)
    assert greedy(client, "ft-tiny:v2") != first


def test_stop_string_cuts_real_generation(client: openai.OpenAI) -> None:
    text = greedy(client, "tiny-llama", 20)
    cut = text[3:6]
    if not cut.strip():
        pytest.skip("greedy output too short to pick a stop string")
    reply = client.chat.completions.create(
        model="tiny-llama", messages=HELLO, temperature=0, max_tokens=20, stop=[cut]
    )
    assert reply.choices[0].message.content == text[: text.index(cut)]
    assert reply.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_repeatable(client: openai.OpenAI) -> None:
    def sample() -> str:
        reply = client.chat.completions.create(
            model="tiny-llama", messages=HELLO, temperature=1.0, top_p=0.9, seed=7, max_tokens=8
        )
        return reply.choices[0].message.content or ""

    assert sample() == sample()


def engine_for(home: Path, model: Path, **server: object) -> ChatEngine:
    engine = ChatEngine(write_settings(home, model=str(model), **server))
    engine.load()
    return engine


async def test_fast_decoder_matches_transformers(tiny_model: Path, tmp_path: Path) -> None:
    reference = engine_for(tmp_path / "a", tiny_model, fast_decode=False)
    fast = engine_for(tmp_path / "b", tiny_model, int8_weights=False)
    quantized = engine_for(tmp_path / "c", tiny_model)
    assert (reference.decoder, fast.decoder, quantized.decoder) == (
        "transformers",
        "fast-fp32",
        "fast-int8",
    )
    for engine in (reference, fast, quantized):
        make_adapter(tiny_model, engine.settings.adapters_path, "plain")
        make_adapter(tiny_model, engine.settings.adapters_path, "dora", use_dora=True)
    greedy_sampling = Sampling(max_tokens=12, temperature=0)
    answers = {}
    for engine in (reference, fast, quantized):
        answers[engine.decoder] = [
            (await engine.chat(model, HELLO, greedy_sampling)).text
            for model in ("tiny-llama", "plain", "dora", "tiny-llama")
        ]
        engine.close()
    assert answers["fast-fp32"] == answers["transformers"]  # same maths, same tokens
    base, plain, dora, base_again = answers["fast-int8"]
    assert len({base, plain, dora}) == 3 and base_again == base
    assert dora == answers["transformers"][2]  # DoRA is served by peft, never quantized


@pytest.mark.slow
async def test_embedded_smollm2_answers(tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "home")
    with serving(settings, TOKEN) as (base_url, _):
        assert (settings.models_path / "SmolLM2-135M-Instruct" / "model.safetensors").exists()
        client = openai.AsyncOpenAI(base_url=base_url, api_key=TOKEN, max_retries=0)
        reply = await client.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[
                {"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            temperature=0,
            max_tokens=24,
        )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
