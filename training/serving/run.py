"""Run `fewtune serve`: load the model, listen with uvicorn, advertise in FEWTUNE_HOME/server.json.

server.json ({pid, url, started_at, model}) is written once the socket listens (with the real
port when port 0 asked for any free one) and removed on a clean exit (SIGINT/SIGTERM, idle
timeout). The bearer token in use is written to FEWTUNE_HOME/server.token (mode 0600) so local
clients of the same user can read it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from storage.settings import Settings
from training.serving.engine import ChatEngine

log = logging.getLogger(__name__)

TOKEN_ENV = "FEWTUNE_SERVER_TOKEN"


def server_json_path(settings: Settings) -> Path:
    return settings.home / "server.json"


def server_token_path(settings: Settings) -> Path:
    return settings.home / "server.token"


def resolve_token(settings: Settings, token: str | None = None) -> str:
    """The argument, else $FEWTUNE_SERVER_TOKEN, else a new random token; saved 0600."""
    chosen = token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    path = server_token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(chosen)
    path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed
    return chosen


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _remove_if_ours(path: Path) -> None:
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"  # listening everywhere: loopback reaches it from this machine
    return f"[{host}]" if ":" in host else host


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    idle_timeout: float | None = None,
    token: str | None = None,
) -> None:
    """Serve the OpenAI-compatible API until SIGINT/SIGTERM or `idle_timeout` seconds idle.

    host/port default to settings.server; idle_timeout None or 0 never stops by itself.
    """
    import uvicorn

    from training.serving.app import create_app, with_activity

    host = host or settings.server.host
    port = settings.server.port if port is None else port
    token = resolve_token(settings, token)
    engine = ChatEngine(settings)
    log.info("loading base model %s", engine.base_model)
    engine.load()  # before listening: server.json appears only when the server can answer
    app = create_app(settings, token, engine=engine)
    tracker = with_activity(app)
    config = uvicorn.Config(
        tracker, host=host, port=port, log_level="info", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    info_path = server_json_path(settings)

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    async def main() -> None:
        # While serving, SIGINT/SIGTERM ask uvicorn to stop. uvicorn handles them itself while it
        # runs and re-raises the signal once shut down; landing here then, it ends cleanly
        # instead of raising KeyboardInterrupt inside the server's task (a stray traceback).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                raise SystemExit(f"fewtune serve could not listen on {host}:{port}.")
            await asyncio.sleep(0.05)
        real_port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://{_url_host(host)}:{real_port}/v1"
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        _write_json(
            info_path,
            {"pid": os.getpid(), "url": url, "started_at": started, "model": engine.base_model},
        )
        print(f"fewtune serve: {url} (model {engine.base_model})", flush=True)
        while not task.done():
            if idle_timeout and tracker.idle_seconds() > idle_timeout:
                log.info("no request for %s s: stopping", idle_timeout)
                server.should_exit = True
            await asyncio.sleep(min(1.0, idle_timeout / 4) if idle_timeout else 1.0)
        await task

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _remove_if_ours(info_path)
        engine.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m training.serving [--host H] [--port P] [--idle-timeout S]`."""
    import argparse

    from storage.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m training.serving", description=__doc__)
    parser.add_argument("--host", default=None, help="address to listen on (default: settings)")
    parser.add_argument("--port", type=int, default=None, help="port; 0 picks a free one")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        serve(settings, host=args.host, port=args.port, idle_timeout=args.idle_timeout)
    except Exception as exc:  # one clear sentence on stderr (and in the on-demand log)
        print(f"fewtune serve failed: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc
