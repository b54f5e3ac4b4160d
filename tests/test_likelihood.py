"""The likelihood metric's client side on loopback: a small server in the test speaks the
contract of `fewtune serve` (`POST /v1/apply-template`, and `POST /v1/completions` with echo,
logprobs and max_tokens 0), one token per character with known log-probabilities, so the mean
over the answer's tokens alone is known; and a chat-only provider cannot score, in one sentence.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from fake_model import FakeModel

from assistants.likelihood import CannotScore, mean_log_prob
from assistants.providers import ModelRef, Providers
from storage.settings import load_settings

TEMPLATE = "<s>{content}</s><assistant>"


class Scorer(http.server.BaseHTTPRequestHandler):
    """Each character is a token whose log-probability is minus its position / 100."""

    requests: list[tuple[str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.path == "/v1/apply-template":
            text = "".join(TEMPLATE.format(content=m["content"]) for m in body["messages"])
            self._json({"prompt": text})
            return
        assert self.path == "/v1/completions" and body["echo"] and body["max_tokens"] == 0
        text = body["prompt"]
        logprobs = {
            "tokens": list(text),
            "token_logprobs": [None] + [-i / 100 for i in range(1, len(text))],
            "text_offset": list(range(len(text))),
            "top_logprobs": None,
        }
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": logprobs}
        self._json(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
            }
        )

    def _json(self, data: dict) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scorer():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Scorer.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def providers_for(home, name: str, url: str) -> Providers:
    (home / "fewtune.toml").write_text(
        f'[providers.{name}]\nbase_url = "{url}"\nmax_retries = 0\n', encoding="utf-8"
    )
    return Providers(load_settings(home))


async def test_the_answer_tokens_alone_are_averaged(fewtune_home, scorer):
    providers = providers_for(fewtune_home, "gpu", scorer)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    try:
        score = await mean_log_prob(providers, ModelRef("gpu", "ft:1"), messages, "hello")
    finally:
        await providers.close()
    prompt = "<s>Be brief.</s><assistant><s>hi</s><assistant>"
    answer_positions = range(len(prompt), len(prompt) + len("hello"))
    assert score == pytest.approx(sum(-i / 100 for i in answer_positions) / 5)
    (template, first), (completions, second) = Scorer.requests
    assert template == "/v1/apply-template" and first == {"messages": messages, "model": "ft:1"}
    assert completions == "/v1/completions" and second["prompt"] == prompt + "hello"
    assert second["logprobs"] == 0 and second["model"] == "ft:1"


async def test_a_chat_only_provider_cannot_score(fewtune_home):
    with FakeModel() as chat_only:
        providers = providers_for(fewtune_home, "hosted", chat_only.base_url)
        try:
            with pytest.raises(CannotScore) as said:
                await mean_log_prob(providers, ModelRef("hosted", "m"), [], "x")
        finally:
            await providers.close()
    assert str(said.value) == (
        "The provider 'hosted' cannot score answers (HTTP 404 on apply-template or completions "
        "with logprobs), so the likelihood was skipped."
    )
