"""The one scripted model for tests and benchmarks: a real OpenAI-compatible HTTP server on
127.0.0.1 (after simonw/llm's `MockModel`). A test queues what the next requests get with
`enqueue` and reads what was sent in `history`; with nothing queued it answers what
`respond(body)` says, or `reply`, or "echo: <the last user message>". It is a chat-only API,
like a hosted one: any other path (`/v1/completions`, fewtune's `/v1/apply-template`) gets 404,
recorded in `others`. Chat completions stream as server-sent events, one word per chunk, or
come whole; both carry usage.

Given `score(prompt, answer)`, it also scores texts as `fewtune serve` does: `/v1/apply-template`
renders the messages as `<|role|>content` lines and a last `<|assistant|>`; `/v1/completions`
(echo, logprobs, max_tokens 0) makes every character a token, those of the prompt with
log-probability 0 and those of the answer (what follows the last `<|assistant|>`) with
`score(prompt, answer)` each.

It serves from threads of its own (the stdlib's ThreadingHTTPServer), so sync tests, async
tests and the CLI's own event loop all talk to it the same way. `python tests/fake_model.py
--delay 1` runs one in a process of its own and prints its /v1 URL (bench/discord_load.py).
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Scripted:
    """What one request gets: chunks of text, an HTTP error, or raw event-stream bytes;
    `hold` (if set) is waited on first."""

    chunks: list[str] | None = None
    status: int = 200
    error: str = ""
    raw: bytes | None = None
    hold: threading.Event | None = None


class FakeModel:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers what it was told."""

    def __init__(
        self,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        reply: str | None = None,
        respond: Callable[[dict[str, Any]], str] | None = None,
        score: Callable[[str, str], float] | None = None,
    ):
        self.delay = delay  # seconds before every answer
        self.chunk_delay = chunk_delay  # seconds between streamed chunks
        self.reply = reply  # the answer when nothing is queued (default: the echo)
        self.respond = respond  # or the answer as a function of the request's body
        self.score = score  # the log-prob of each answer character, when it scores texts
        self.history: list[dict[str, Any]] = []  # every chat request's body, in order
        self.others: list[str] = []  # the paths of other requests (answered 404)
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    def enqueue(
        self,
        chunks: list[str] | None = None,
        *,
        status: int = 200,
        error: str = "",
        raw: bytes | None = None,
        hold: threading.Event | None = None,
    ) -> None:
        """The next unanswered request gets `chunks` (streamed as given), or `status` with an
        OpenAI error body saying `error`, or `raw` bytes after 200 event-stream headers. With
        `hold`, it first waits until that event is set (a model that does not answer)."""
        with self._lock:
            self._queue.append(Scripted(chunks, status, error, raw, hold))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeModel:
        handler = type("Handler", (_Handler,), {"model": self})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler, False)
        server.daemon_threads = True
        server.request_queue_size = 1024  # a benchmark's burst connects at once
        server.server_bind()
        server.server_activate()
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="fake-model", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering: from now on a connection is refused (a provider that is down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any]) -> Scripted:
        with self._lock:
            self.history.append(body)
            if self._queue:
                return self._queue.popleft()
        if self.respond is not None:
            text = self.respond(body)
        elif self.reply is not None:
            text = self.reply
        else:
            user = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
            text = f"echo: {user[-1] if user else ''}"
        words = text.split(" ")
        return Scripted([w if i == 0 else " " + w for i, w in enumerate(words)])


class _Handler(http.server.BaseHTTPRequestHandler):
    model: FakeModel

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = self.path.rstrip("/")
        if self.model.score is not None and path in ("/v1/apply-template", "/v1/completions"):
            self._json(200, self._scored(path, body))
            return
        if path != "/v1/chat/completions":
            with self.model._lock:
                self.model.others.append(self.path)
            self._json(404, {"error": {"message": f"No route {self.path}.", "type": "fake"}})
            return
        scripted = self.model._next(body)
        if scripted.hold is not None:
            scripted.hold.wait()
        if self.model.delay:
            time.sleep(self.model.delay)
        if scripted.status != 200:
            self._json(scripted.status, {"error": {"message": scripted.error, "type": "fake"}})
        elif scripted.raw is not None:
            self._events_head()
            self.wfile.write(scripted.raw)
        elif body.get("stream"):
            self._stream(body, scripted.chunks or [])
        else:
            text = "".join(scripted.chunks or [])
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            completion = {**_head(body, "chat.completion"), "choices": [choice]}
            self._json(200, {**completion, "usage": _usage(body, scripted.chunks or [])})

    def _scored(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.model.score is not None
        if path == "/v1/apply-template":
            lines = [f"<|{m['role']}|>{m['content']}" for m in body["messages"]]
            return {"prompt": "\n".join([*lines, ASSISTANT])}
        text = body["prompt"]
        cut = text.rindex(ASSISTANT) + len(ASSISTANT)
        value = self.model.score(text[:cut], text[cut:])
        logprobs = {
            "tokens": list(text),
            "token_logprobs": [None] + [0.0 if i < cut else value for i in range(1, len(text))],
            "text_offset": list(range(len(text))),
            "top_logprobs": None,
        }
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": logprobs}
        return {**_head(body, "text_completion"), "choices": [choice]}

    def _stream(self, body: dict[str, Any], chunks: list[str]) -> None:
        self._events_head()
        head = _head(body, "chat.completion.chunk")
        for chunk in chunks:
            delta = {"content": chunk}
            self._event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            if self.model.chunk_delay:
                time.sleep(self.model.chunk_delay)
        self._event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({**head, "choices": [], "usage": _usage(body, chunks)})
        self.wfile.write(b"data: [DONE]\n\n")

    def _events_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


ASSISTANT = "<|assistant|>"  # where a scored prompt ends and its answer begins


def _head(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model", ""),
    }


def _usage(body: dict[str, Any], chunks: list[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(chunks),
        "total_tokens": prompt + len(chunks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake model until killed.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    model = FakeModel(delay=args.delay).start()
    print(model.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
