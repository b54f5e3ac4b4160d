"""The OpenAPI schema `fewtune serve` serves at /openapi.json is true (issue 12): behind the
token, errors documented as the 400s (not 422s) they are, every documented status reachable by
a real request to a real server, the limits it states enforced as stated, response bodies in
the documented shapes, and a 405's Allow naming what the schema lists for the path."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import jsonschema
import pytest
import torch
from server_fixtures import make_adapter, make_tiny_model, serving, write_settings

from training.serving.decoding import SamplingParams, sample_token
from training.serving.response_models import ChatCompletionChunk, TextCompletionChunk

TOKEN = "schema-token"
MODEL = "tiny-llama"
LIMIT = 8  # [server] max_tokens_limit
HELLO = [{"role": "user", "content": "Say hello."}]
LINE = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / MODEL)
    home = tmp_path_factory.mktemp("home")
    settings = write_settings(home, model=str(tiny), max_tokens_limit=LIMIT)
    with serving(settings, TOKEN) as (base_url, app):
        yield base_url, app, tiny, settings


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(
        base_url=served[0].removesuffix("/v1"),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def schema(http) -> dict[str, Any]:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops]


def test_the_schema_is_behind_the_token(served) -> None:
    root = served[0].removesuffix("/v1")
    assert httpx.get(f"{root}/openapi.json").status_code == 401
    wrong = httpx.get(f"{root}/openapi.json", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_errors_are_documented_as_answered(schema, http) -> None:
    text = json.dumps(schema)
    assert '"422"' not in text and "HTTPValidationError" not in text
    assert '"ge":' not in text and '"le":' not in text  # bounds in JSON Schema's words
    assert schema["security"] == [{"bearer": []}]
    for method, path in operations(schema):
        responses = schema["paths"][path][method.lower()]["responses"]
        assert "401" in responses, (method, path)
        for status, response in responses.items():
            if status != "200":
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorResponse"
    invalid = http.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert invalid.status_code == 400 and set(invalid.json()["error"]) == {
        "message",
        "type",
        "code",
        "param",
    }


@pytest.fixture(scope="module")
def resources(served, http) -> dict[str, str]:
    """A file, a queued job, a failed job and a succeeded job with its adapter on disk."""
    _, app, tiny, settings = served
    upload = http.post(
        "/v1/files",
        files={"file": ("train.jsonl", (LINE + "\n") * 3)},
        data={"purpose": "fine-tune"},
    )
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    store = app.state.finetune.store

    def job() -> str:
        created = http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": file_id})
        assert created.status_code == 200, created.text
        return created.json()["id"]

    queued, failed, succeeded = job(), job(), job()
    active = ("validating_files", "queued", "running")
    store.fail_job(failed, "test", "Failed on purpose.")
    name = f"ft:{MODEL}::{succeeded}"
    make_adapter(tiny, settings.adapters_path, name)
    assert store.finish_job(succeeded, "succeeded", active, fine_tuned_model=name)
    doomed = http.post(
        "/v1/files", files={"file": ("x.jsonl", LINE + "\n")}, data={"purpose": "fine-tune"}
    ).json()["id"]
    return {
        "file": file_id,
        "doomed": doomed,
        "queued": queued,
        "failed": failed,
        "succeeded": succeeded,
    }


def too_large_upload(http: httpx.Client) -> int:
    """POST /v1/files announcing 600 MB (sent raw: the server answers before reading it)."""
    url = http.base_url
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(
            (
                "POST /v1/files HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                "Content-Length: 600000000\r\n\r\n"
            ).encode()
        )
        return int(sock.recv(4096).split()[1])


def requests_for(ids: dict[str, str]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """One request per documented (method, path, status) but 401 (every route, below) and 429
    (a full queue: tests/test_server_cancel.py reaches it and checks it against this schema)."""
    chat = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    text = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    file, job = f"/v1/files/{ids['file']}", f"/v1/fine_tuning/jobs/{ids['queued']}"
    return {
        ("GET", "/v1/models", 200): {"url": "/v1/models"},
        ("GET", "/v1/models/{model_id}", 200): {"url": f"/v1/models/{MODEL}"},
        ("GET", "/v1/models/{model_id}", 404): {"url": "/v1/models/nope"},
        ("POST", "/v1/chat/completions", 200): {"json": chat},
        ("POST", "/v1/chat/completions", 400): {"json": {**chat, "n": 2}},
        ("POST", "/v1/chat/completions", 404): {"json": {**chat, "model": "nope"}},
        ("POST", "/v1/completions", 200): {"json": text},
        ("POST", "/v1/completions", 400): {"json": {**text, "max_tokens": LIMIT + 1}},
        ("POST", "/v1/completions", 404): {"json": {**text, "model": "nope"}},
        ("POST", "/v1/apply-template", 200): {"json": {"messages": HELLO}},
        ("POST", "/v1/apply-template", 400): {"json": {"messages": []}},
        ("POST", "/v1/apply-template", 404): {"json": {"messages": HELLO, "model": "nope"}},
        ("POST", "/apply-template", 200): {"json": {"messages": HELLO}},
        ("POST", "/apply-template", 400): {"json": {"messages": "hi"}},
        ("POST", "/apply-template", 404): {"json": {"messages": HELLO, "model": "nope"}},
        ("POST", "/v1/files", 200): {
            "files": {"file": ("t.jsonl", LINE + "\n")},
            "data": {"purpose": "fine-tune"},
        },
        ("POST", "/v1/files", 400): {
            "files": {"file": ("t.jsonl", "not json\n")},
            "data": {"purpose": "fine-tune"},
        },
        ("POST", "/v1/files", 413): {"raw": too_large_upload},
        ("GET", "/v1/files", 200): {"url": "/v1/files"},
        ("GET", "/v1/files", 400): {"url": "/v1/files?limit=0"},
        ("GET", "/v1/files/{file_id}", 200): {"url": file},
        ("GET", "/v1/files/{file_id}", 404): {"url": "/v1/files/file-nope"},
        ("GET", "/v1/files/{file_id}/content", 200): {"url": f"{file}/content"},
        ("GET", "/v1/files/{file_id}/content", 404): {"url": "/v1/files/file-nope/content"},
        ("DELETE", "/v1/files/{file_id}", 200): {"url": f"/v1/files/{ids['doomed']}"},
        ("DELETE", "/v1/files/{file_id}", 404): {"url": "/v1/files/file-nope"},
        ("POST", "/v1/fine_tuning/jobs", 200): {
            "json": {"model": MODEL, "training_file": ids["file"]}
        },
        ("POST", "/v1/fine_tuning/jobs", 400): {
            "json": {"model": MODEL, "training_file": "file-nope"}
        },
        ("POST", "/v1/fine_tuning/jobs", 404): {
            "json": {"model": "nope", "training_file": ids["file"]}
        },
        ("GET", "/v1/fine_tuning/jobs", 200): {"url": "/v1/fine_tuning/jobs"},
        ("GET", "/v1/fine_tuning/jobs", 400): {"url": "/v1/fine_tuning/jobs?limit=101"},
        ("GET", "/v1/fine_tuning/jobs/{job_id}", 200): {"url": job},
        ("GET", "/v1/fine_tuning/jobs/{job_id}", 404): {"url": "/v1/fine_tuning/jobs/j-nope"},
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", 200): {"url": f"{job}/cancel"},
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", 400): {
            "url": f"/v1/fine_tuning/jobs/{ids['failed']}/cancel"
        },
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", 404): {
            "url": "/v1/fine_tuning/jobs/j-nope/cancel"
        },
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events", 200): {"url": f"{job}/events"},
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events", 400): {"url": f"{job}/events?limit=x"},
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events", 404): {
            "url": "/v1/fine_tuning/jobs/j-nope/events"
        },
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", 200): {"url": f"{job}/checkpoints"},
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", 400): {
            "url": f"{job}/checkpoints?limit=0"
        },
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", 404): {
            "url": "/v1/fine_tuning/jobs/j-nope/checkpoints"
        },
        ("GET", "/v1/fine_tuning/jobs/{job_id}/adapter", 200): {
            "url": f"/v1/fine_tuning/jobs/{ids['succeeded']}/adapter"
        },
        ("GET", "/v1/fine_tuning/jobs/{job_id}/adapter", 400): {"url": f"{job}/adapter"},
        ("GET", "/v1/fine_tuning/jobs/{job_id}/adapter", 404): {
            "url": "/v1/fine_tuning/jobs/j-nope/adapter"
        },
    }


def concrete(path: str) -> str:
    return path.replace("{model_id}", MODEL).replace("{file_id}", "f").replace("{job_id}", "j")


def send(http: httpx.Client, method: str, path: str, request: dict[str, Any]) -> httpx.Response:
    url = request.get("url", path)
    return http.request(
        method, url, json=request.get("json"), files=request.get("files"), data=request.get("data")
    )


def body_schema(schema: dict[str, Any], response: dict[str, Any], media: str) -> dict[str, Any]:
    """A response's body schema, its $refs resolvable against the document's components."""
    return {**response["content"][media]["schema"], "components": schema["components"]}


def test_every_documented_status_is_reachable(schema, http, resources) -> None:
    table = requests_for(resources)
    documented = {
        (method, path, int(status))
        for method, path in operations(schema)
        for status in schema["paths"][path][method.lower()]["responses"]
        if status not in ("401", "429")
    }
    assert set(table) == documented
    for (method, path, status), request in table.items():
        if "raw" in request:
            assert request["raw"](http) == status
            continue
        response = send(http, method, path, request)
        assert response.status_code == status, (method, path, response.text)
        documented_response = schema["paths"][path][method.lower()]["responses"][str(status)]
        media = response.headers["content-type"].split(";")[0]
        assert media in documented_response["content"], (method, path, media)
        if media == "application/json":
            jsonschema.validate(response.json(), body_schema(schema, documented_response, media))
    for method, path in operations(schema):
        no_token = httpx.request(method, str(http.base_url.join(concrete(path))))
        assert no_token.status_code == 401, (method, path)


def test_429_is_documented_on_the_routes_that_wait_for_the_engine(schema) -> None:
    with_429 = {
        (m, p) for m, p in operations(schema) if "429" in schema["paths"][p][m.lower()]["responses"]
    }
    assert with_429 == {
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/apply-template"),
        ("POST", "/apply-template"),
    }
    headers = schema["paths"]["/v1/completions"]["post"]["responses"]["429"]["headers"]
    assert "Retry-After" in headers


def test_the_limits_in_the_schema_are_the_servers(schema, http, served) -> None:
    models = schema["components"]["schemas"]
    chat = models["ChatCompletionRequest"]["properties"]
    capped = [branch for branch in chat["max_tokens"]["anyOf"] if branch["type"] == "integer"]
    assert capped[0]["maximum"] == LIMIT
    assert chat["n"]["enum"] == [1]
    base = {"model": MODEL, "messages": HELLO, "max_tokens": 1}
    ok = http.post("/v1/chat/completions", json={**base, "max_tokens": LIMIT})
    assert ok.status_code == 200
    for refused in (
        {"max_tokens": LIMIT + 1},
        {"max_completion_tokens": LIMIT + 1},
        {"n": 2},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"temperature": 2.5},
        {"top_p": 0},
        {"tools": [{"type": "function"}]},
        {"response_format": {"type": "json_object"}},
        {"response_format": "none"},  # was taken for "text"; OpenAI refuses it
    ):
        got = http.post("/v1/chat/completions", json={**base, **refused})
        assert got.status_code == 400, refused
        instance = {**base, **refused}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(
                instance, {**models["ChatCompletionRequest"], "components": schema["components"]}
            )
    vocabulary = models["CompletionRequest"]["properties"]["prompt"]["anyOf"][2]["items"]
    highest = served[1].state.engine.vocabulary_size - 1
    assert vocabulary["minimum"] == 0 and vocabulary["maximum"] == highest > 0
    for ids, status in (([highest], 200), ([highest + 1], 400)):
        answer = http.post("/v1/completions", json={"model": MODEL, "prompt": ids, "max_tokens": 1})
        assert answer.status_code == status, answer.text


def test_types_are_as_strict_as_the_schema(http) -> None:
    """A string is no boolean or number (pydantic's lax mode took "true" and "1"), while a
    whole-number float is an integer, as JSON Schema counts it."""
    base = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    for loose in ({"stream": "true"}, {"n": "1"}, {"max_tokens": "2"}, {"echo": 1}):
        assert http.post("/v1/completions", json={**base, **loose}).status_code == 400, loose
    whole = http.post("/v1/completions", json={**base, "max_tokens": 2.0, "prompt": [1.0, 2]})
    assert whole.status_code == 200, whole.text
    assert http.post("/v1/completions", json={**base, "max_tokens": 2.5}).status_code == 400


def test_completions_without_max_tokens_stay_within_the_limit(http) -> None:
    """The default 16 tokens is lowered to a lower `[server] max_tokens_limit` (it was refused)."""
    answer = http.post("/v1/completions", json={"model": MODEL, "prompt": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] <= LIMIT


def test_a_405_allows_every_documented_method(schema, http) -> None:
    """Starlette named only the first matching route's methods: /v1/files said POST alone."""
    for path, documented in schema["paths"].items():
        response = http.request("PUT", concrete(path))
        assert response.status_code == 405, path
        assert response.headers["allow"] == ", ".join(sorted(m.upper() for m in documented))


@pytest.mark.parametrize(
    ("path", "body", "chunk"),
    [
        ("/v1/chat/completions", {"messages": HELLO}, ChatCompletionChunk),
        ("/v1/completions", {"prompt": "hi"}, TextCompletionChunk),
    ],
)
def test_streamed_chunks_are_the_documented_models(http, path, body, chunk) -> None:
    request = {"model": MODEL, "max_tokens": 3, "stream": True, **body}
    request["stream_options"] = {"include_usage": True}
    events = []
    with http.stream("POST", f"{path}", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk.model_validate_json(event)


def test_a_vanishing_temperature_samples_the_likeliest_token(http) -> None:
    """Found by bench/reliability.py: temperature and top_p of 5e-324 (valid: above 0) made the
    sampling probabilities NaN, a 500. Now it is greedy, as the limit of sampling is."""
    tiny = {"temperature": 5e-324, "top_p": 5e-324}
    base = {"model": MODEL, "prompt": [0], "max_tokens": 3, "seed": 1}
    sampled = http.post("/v1/completions", json={**base, **tiny})
    assert sampled.status_code == 200, sampled.text
    greedy = http.post("/v1/completions", json={**base, "temperature": 0})
    assert sampled.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
    logits = torch.tensor([0.5, 3.0, -1.0, 3.0 - 1e-6])
    params = SamplingParams(temperature=5e-324)
    assert sample_token(logits, params, torch.Generator().manual_seed(0)) == 1
