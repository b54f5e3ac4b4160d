"""ensure_local_server: finds, starts (once), restarts and stops the on-demand `fewtune serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import openai
import pytest
from server_fixtures import make_tiny_model, write_settings

from assistants.errors import ProviderError
from assistants.local_server import LocalServer, ensure_local_server, stop_local_server
from storage.settings import Settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (model `tiny`): a real server that starts in seconds."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny_settings(fewtune_home: Path, tiny: Path):
    settings = write_settings(fewtune_home, model=str(tiny), idle_timeout=0, start_timeout=120)
    yield settings
    stop_local_server(settings)


def starts(settings: Settings) -> int:
    return (settings.home / "logs" / "server.log").read_text().count("--- starting")


def ask(server: LocalServer, text: str = "hi") -> str:
    """Ask the server's tiny model; returns the model that answered."""
    client = openai.OpenAI(base_url=server.base_url, api_key=server.token, max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": text}], max_tokens=2
    )
    return reply.model


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own exited child
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_starts_once_then_reuses(tiny_settings: Settings) -> None:
    first = ensure_local_server(tiny_settings)
    assert ask(first) == "tiny"
    info = json.loads((tiny_settings.home / "server.json").read_text())
    assert info["pid"] == first.pid and info["model"] == "tiny"
    assert info["url"] == first.base_url and not info["url"].endswith(":0/v1")
    token_file = tiny_settings.home / "server.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == first.token
    second = ensure_local_server(tiny_settings)
    assert second == first
    assert starts(tiny_settings) == 1


def test_restarts_after_kill(tiny_settings: Settings) -> None:
    first = ensure_local_server(tiny_settings)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid, 10)
    second = ensure_local_server(tiny_settings)
    assert second.pid != first.pid
    assert ask(second, "again") == "tiny"
    assert starts(tiny_settings) == 2


def test_concurrent_callers_get_one_server(tiny_settings: Settings) -> None:
    results: list[LocalServer] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_local_server(tiny_settings)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    assert len({r.pid for r in results}) == 1
    assert starts(tiny_settings) == 1


def test_stop_removes_server_json(tiny_settings: Settings) -> None:
    server = ensure_local_server(tiny_settings)
    assert stop_local_server(tiny_settings) is True
    assert server.pid is not None and wait_gone(server.pid, 10)
    assert not (tiny_settings.home / "server.json").exists()
    assert stop_local_server(tiny_settings) is False
    log = (tiny_settings.home / "logs" / "server.log").read_text()
    assert "Finished server process" in log and "Traceback" not in log, log  # a clean SIGTERM


def test_idle_timeout_stops_the_server(fewtune_home: Path, tiny: Path) -> None:
    settings = write_settings(fewtune_home, model=str(tiny), idle_timeout=1.5, start_timeout=120)
    server = ensure_local_server(settings)
    assert ask(server) == "tiny"
    assert server.pid is not None
    assert wait_gone(server.pid, 15), "the idle server did not stop"
    assert not (settings.home / "server.json").exists()
    assert "stopping" in (settings.home / "logs" / "server.log").read_text()


def test_failed_start_is_one_line_with_the_servers_reason(fewtune_home: Path) -> None:
    settings = write_settings(fewtune_home, model="/nonexistent/model", start_timeout=60)
    with pytest.raises(ProviderError) as caught:
        ensure_local_server(settings)
    message = str(caught.value)
    # One line (a chat's reply, the terminal's one-line error): the server's own last line and
    # where its log is, not the log itself.
    assert "\n" not in message, message
    assert "exited with code 1" in message
    assert "/nonexistent/model does not exist" in message
    assert str(settings.home / "logs" / "server.log") in message


@pytest.mark.slow
def test_real_model_served_on_demand(fewtune_home: Path) -> None:
    model = make_tiny_model(fewtune_home / "tiny")
    settings = write_settings(fewtune_home, model=str(model), idle_timeout=0, start_timeout=120)
    try:
        server = ensure_local_server(settings)
        client = openai.OpenAI(base_url=server.base_url, api_key=server.token, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
    finally:
        stop_local_server(settings)
