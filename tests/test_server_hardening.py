"""Hostile and careless input to a real `fewtune serve` (issue 12, server items): every answer
is a 4xx in OpenAI's error shape, never a 500, and a requested model is a name, never a path."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from server_fixtures import make_tiny_model, serving, write_settings

TOKEN = "hardening-token"
HELLO = [{"role": "user", "content": "Say hello."}]
GOOD_LINE = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
    home = tmp_path_factory.mktemp("home")
    settings = write_settings(home, model=str(tiny), max_tokens_limit=64)
    with serving(settings, TOKEN) as (base_url, app):
        yield base_url, tiny


@pytest.fixture
def http(served) -> httpx.Client:
    with httpx.Client(
        base_url=served[0], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key=TOKEN, max_retries=0, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["message"].endswith(".") and "\n" not in error["message"]
    return error


def raw_post(http: httpx.Client, path: str, text: str) -> httpx.Response:
    return http.post(path, content=text, headers={"Content-Type": "application/json"})


NOT_NAMES = ["x" * 256, "😀" * 86, "~nosuchuser", "~nosuchuser/model", "/etc", "../../etc"]


@pytest.mark.parametrize("name", NOT_NAMES)
def test_a_model_named_like_a_path_or_too_long_does_not_exist(http, name: str) -> None:
    chat = http.post("/chat/completions", json={"model": name, "messages": HELLO})
    if len(name) > 256:  # over the schema's limit: a 400 before any lookup
        error_of(chat, 400)
    else:
        assert "does not exist" in error_of(chat, 404)["message"]
    completion = http.post("/completions", json={"model": name, "prompt": "hi"})
    assert completion.status_code in (400, 404) and "error" in completion.json()
    if ".." not in name:  # the client itself resolves dot segments in a URL
        got = http.get(f"/models/{name}")
        assert "does not exist" in error_of(got, 404)["message"]


def test_the_server_disk_is_no_oracle(http, served) -> None:
    """A model folder on the server's disk, named by its path, is answered as a missing one.
    (The configured `[server] model` string itself is a name the server answers to.)"""
    other = served[1].parent / "SmolLM2-135M-Instruct"
    other.mkdir(exist_ok=True)
    (other / "config.json").write_text("{}", encoding="utf-8")
    real_folder = str(other)
    for path in (real_folder, real_folder + "-missing", str(served[1]) + "/"):
        error = error_of(http.get(f"/models/{path}"), 404)
        assert error["code"] == "model_not_found"
        chat = http.post("/chat/completions", json={"model": path + "/", "messages": HELLO})
        assert error_of(chat, 404)["code"] == "model_not_found"
    assert http.get("/models/tiny-llama").status_code == 200


def test_fine_tuning_a_model_that_is_not_served_is_404(client, http) -> None:
    uploaded = client.files.create(file=("t.jsonl", GOOD_LINE.encode()), purpose="fine-tune")
    for name in ("x" * 250, "~nosuchuser", "/some/dir/SmolLM2-135M-Instruct"):
        job = http.post("/fine_tuning/jobs", json={"model": name, "training_file": uploaded.id})
        assert "does not exist" in error_of(job, 404)["message"]


def test_lone_surrogates_and_huge_seeds_are_400(http) -> None:
    body = '{"model": "tiny-llama", "messages": [{"role": "user", "content": "\\ud800"}]}'
    assert "surrogate" in error_of(raw_post(http, "/chat/completions", body), 400)["message"]
    parts = '[{"type": "text", "text": "a\\udfff"}]'
    body = '{"model": "tiny-llama", "messages": [{"role": "user", "content": ' + parts + "}]}"
    error_of(raw_post(http, "/chat/completions", body), 400)
    body = '{"model": "tiny-llama", "prompt": ["ok", "\\ud800"], "max_tokens": 1}'
    error_of(raw_post(http, "/completions", body), 400)
    huge = 2**70
    chat = http.post(
        "/chat/completions", json={"model": "tiny-llama", "messages": HELLO, "seed": huge}
    )
    assert "seed" in error_of(chat, 400)["message"]
    text = http.post("/completions", json={"model": "tiny-llama", "prompt": "hi", "seed": huge})
    assert "seed" in error_of(text, 400)["message"]


def test_a_64_bit_seed_still_generates(client) -> None:
    answer = client.chat.completions.create(
        model="tiny-llama", messages=HELLO, max_tokens=2, seed=2**63 - 1
    )
    assert answer.choices[0].finish_reason in ("length", "stop")


BAD_LINES = {
    "nested": "[" * 100_000 + "]" * 100_000,
    "digits": '{"messages": [], "n": ' + "9" * 5000 + "}",
    "surrogate": '{"messages": [{"role": "user", "content": "\\ud800"}, '
    '{"role": "assistant", "content": "x"}]}',
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_an_unreadable_upload_line_is_refused_and_not_stored(client, http, kind: str) -> None:
    before = client.files.list().data
    data = (GOOD_LINE + "\n" + BAD_LINES[kind] + "\n").encode()
    response = http.post(
        "/files", files={"file": ("bad.jsonl", data)}, data={"purpose": "fine-tune"}
    )
    assert error_of(response, 400)["message"].startswith(
        "Invalid file format for fine-tuning: Line 2"
    )
    assert client.files.list().data == before


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_hyperparameters_are_400(client, http, value: str) -> None:
    uploaded = client.files.create(file=("t.jsonl", GOOD_LINE.encode()), purpose="fine-tune")
    for name in ("n_epochs", "batch_size", "learning_rate_multiplier"):
        hyper = '{"' + name + '": ' + value + "}"
        body = json.dumps({"model": "tiny-llama", "training_file": uploaded.id})
        body = body[:-1] + ', "hyperparameters": ' + hyper + "}"
        error = error_of(raw_post(http, "/fine_tuning/jobs", body), 400)
        assert name in error["message"]
    assert client.fine_tuning.jobs.list().data == []


UNSUPPORTED = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "required",
    "functions": [{"name": "f", "parameters": {}}],
    "function_call": "auto",
    "response_format": {"type": "json_object"},
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_tools_and_json_mode_are_refused_by_name(client, name: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny-llama", messages=HELLO, max_tokens=2, **{name: UNSUPPORTED[name]}
        )
    assert caught.value.code == "unsupported_parameter"
    assert name in caught.value.message and "does not support" in caught.value.message


def test_text_response_format_and_no_tools_are_fine(client) -> None:
    answer = client.chat.completions.create(
        model="tiny-llama",
        messages=HELLO,
        max_tokens=2,
        response_format={"type": "text"},
        tool_choice="none",
    )
    assert answer.usage is not None and answer.usage.completion_tokens <= 2


def test_max_tokens_above_the_limit_is_400_and_at_it_generates(client, http) -> None:
    for path, body in (
        ("/chat/completions", {"messages": HELLO}),
        ("/completions", {"prompt": "hi"}),
    ):
        over = http.post(path, json={"model": "tiny-llama", "max_tokens": 65, **body})
        assert "at most 64" in error_of(over, 400)["message"]
    chat = http.post(
        "/chat/completions",
        json={"model": "tiny-llama", "messages": HELLO, "max_completion_tokens": 10**12},
    )
    error_of(chat, 400)
    answer = client.chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=64)
    assert answer.usage is not None and answer.usage.completion_tokens <= 64


def test_a_405_names_the_allowed_methods(http) -> None:
    response = http.delete("/chat/completions")
    error_of(response, 405)
    assert response.headers["allow"] == "POST"
