"""Find the local `fewtune serve`, or start one on demand (the `local:` provider's endpoint).

A running server advertises itself in FEWTUNE_HOME/server.json ({pid, url, ...}) and its bearer
token in FEWTUNE_HOME/server.token. When none answers, one is started detached as
`python -m training.serving --port 0 --idle-timeout <settings.server.idle_timeout>`, its output
in FEWTUNE_HOME/logs/server.log, under a file lock so that concurrent callers start only one.
`LocalStart` does the same on a thread of its own, for callers that must not wait (the Discord
bot at start-up, a chat that says it is waiting). This module talks HTTP only: it never imports
torch, transformers or the server's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import httpx

from assistants.errors import ProviderError
from storage.locks import file_lock
from storage.processes import python_env
from storage.settings import Settings

TOKEN_ENV = "FEWTUNE_SERVER_TOKEN"


@dataclass(frozen=True)
class LocalServer:
    """How to reach the local server with an OpenAI client."""

    base_url: str  # ends with /v1
    token: str
    pid: int | None = None

    def alive(self) -> bool:
        """Whether its process still runs (a server stopped when idle has gone); a syscall, no
        request. True when the pid is unknown."""
        return self.pid is None or _alive(self.pid)


class LocalStart:
    """One find-or-start of the local server, on a thread of its own; callers on any thread or
    event loop wait for its futures. `starting` is True once no server answered and one is
    being started, False when one was found (or the attempt failed first); `done` holds the
    LocalServer, or the ProviderError that says in one sentence why it could not start."""

    def __init__(self, settings: Settings) -> None:
        self.starting: Future[bool] = Future()
        self.done: Future[LocalServer] = Future()
        for future in (self.starting, self.done):
            # Running futures cannot be cancelled: a waiter that gives up (an abandoned chat)
            # must not cancel the start for the others.
            future.set_running_or_notify_cancel()
        threading.Thread(
            target=self._run, args=(settings,), name="fewtune-local-server", daemon=True
        ).start()

    def _run(self, settings: Settings) -> None:
        try:
            found = _answering(settings)
            if found is None:
                self.starting.set_result(True)
                found = ensure_local_server(settings)
        except ProviderError as exc:
            self.done.set_exception(exc)
        except Exception as exc:  # an OSError starting the process, a broken FEWTUNE_HOME...
            error = ProviderError(f"The local model server could not start: {exc}")
            error.__cause__ = exc
            self.done.set_exception(error)
        else:
            self.done.set_result(found)
        finally:
            if not self.starting.done():
                self.starting.set_result(False)


def ensure_local_server(settings: Settings) -> LocalServer:
    """The running local server, else a new one started and ready (raises ProviderError)."""
    found = _answering(settings)
    if found is not None:
        return found
    with file_lock(settings.home / "server.lock"):
        found = _answering(settings)  # another caller may have started it while we waited
        if found is not None:
            return found
        return _start(settings)


def local_server_running(settings: Settings) -> bool:
    """Whether the local server recorded in FEWTUNE_HOME is up and answering."""
    return _answering(settings) is not None


def stop_local_server(settings: Settings, timeout: float = 10.0) -> bool:
    """Stop the server named in server.json (SIGTERM, then SIGKILL); True if one was stopped."""
    info = _read_info(settings)
    pid = info.get("pid") if info else None
    if not isinstance(pid, int) or not _alive(pid) or not _looks_like_server(pid):
        _unlink(settings.home / "server.json")
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    _unlink(settings.home / "server.json")  # gone after SIGKILL too, which skips its cleanup
    return True


# -- finding ---------------------------------------------------------------------------------


def _read_info(settings: Settings) -> dict | None:
    try:
        data = json.loads((settings.home / "server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _token(settings: Settings) -> str:
    try:
        return (settings.home / "server.token").read_text(encoding="utf-8").strip()
    except OSError:
        return os.environ.get(TOKEN_ENV, "")


def _answering(settings: Settings, pid: int | None = None) -> LocalServer | None:
    """The server in server.json if its process lives and GET /models answers with our token."""
    info = _read_info(settings)
    if not info or not isinstance(info.get("pid"), int) or not isinstance(info.get("url"), str):
        return None
    if (pid is not None and info["pid"] != pid) or not _alive(info["pid"]):
        return None
    token = _token(settings)
    try:
        response = httpx.get(
            f"{info['url'].rstrip('/')}/models",
            headers={"Authorization": f"Bearer {token}"},
            timeout=3.0,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return LocalServer(base_url=info["url"].rstrip("/"), token=token, pid=info["pid"])


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child (else a zombie)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _looks_like_server(pid: int) -> bool:
    """Guard against a recycled pid before sending a signal to it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc here: trust server.json
    # training.server: the module's name before it became training.serving (a server started
    # before an upgrade is still ours to stop)
    return any(name in cmdline for name in (b"training.serving", b"training.server", b"fewtune"))


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# -- starting --------------------------------------------------------------------------------


def _start(settings: Settings) -> LocalServer:
    log_path = settings.home / "logs" / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "training.serving",
        "--port",
        "0",
        "--idle-timeout",
        str(settings.server.idle_timeout),
    ]
    env = {**python_env(), "FEWTUNE_HOME": str(settings.home), "HF_HUB_OFFLINE": "1"}
    with open(log_path, "ab") as log:
        offset = log.tell()
        log.write(f"--- starting: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(settings.home),
            start_new_session=True,  # survives the caller's Ctrl-C; stops when idle
        )
    deadline = time.monotonic() + settings.server.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProviderError(
                f"The local model server exited with code {process.returncode} while starting "
                f"({_log_reason(log_path, offset)}); its log is {log_path}."
            )
        found = _answering(settings, pid=process.pid)
        if found is not None:
            return found
        time.sleep(0.2)
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    raise ProviderError(
        f"The local model server did not answer within {settings.server.start_timeout:.0f} s "
        f"(raise [server] start_timeout in fewtune.toml); its log is {log_path}."
    )


def _log_reason(path: Path, offset: int) -> str:
    """The last line this start wrote to the log (the server's own one-line reason, or a
    traceback's last line): the error stays one sentence, and the log keeps the rest."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "no log"
    lines = [line.strip() for line in text.splitlines()]
    written = [line for line in lines if line and not line.startswith("--- starting")]
    return written[-1] if written else "nothing in its log"
