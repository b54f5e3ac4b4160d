"""The CLI with the example index unreachable: the same one sentence as in Discord
(tests/test_discord_outages.py), on one line, exit 1, no traceback."""

from __future__ import annotations

import socket

from test_cli import error_line, ok


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_chroma_server_is_one_line(cli, monkeypatch):
    ok(cli("assistant", "create", "helper", "--instructions", "Answer."))
    monkeypatch.setenv("FEWTUNE_CHROMA_URL", f"http://127.0.0.1:{closed_port()}")
    line = error_line(cli("example", "add", "helper", "--input", "hello", "--output", "hi"))
    assert "The example index at" in line and "is unavailable" in line
    line = error_line(cli("example", "search", "helper", "hello"))
    assert "is unavailable" in line
