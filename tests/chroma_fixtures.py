"""A real Chroma server (`chroma run`) on loopback, for the tests of the index over HTTP: a
pytest plugin (tests/conftest.py), so any test module asks for `chroma_server` (or
`chroma_core`, a core whose index is that server) by name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMA = Path(sys.executable).parent / "chroma"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no Chroma server at {url} after {timeout} s")


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server on a free loopback port, stopped in teardown."""
    if not CHROMA.exists():
        pytest.skip("the chroma CLI is not installed in this environment")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "chroma.log").open("wb")
    process = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1"]
        + ["--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        wait_until_up(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@pytest.fixture
def chroma_core(chroma_server, fewtune_home, embedder):
    """A real core whose index is the Chroma server (`[index] chroma_url` in its home)."""
    from assistants import Core

    url, _ = chroma_server
    (fewtune_home / "fewtune.toml").write_text(f'[index]\nchroma_url = "{url}"\n')
    core = Core.open(fewtune_home, embedder=embedder)
    yield core
    core.close()
