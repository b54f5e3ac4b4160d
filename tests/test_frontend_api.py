"""The frontends await the core (`core.api`, the message path, promotion) and never hop threads
themselves: checked on the source of bot/, and on where an Api call's work runs."""

from __future__ import annotations

import ast
import inspect
import threading
from pathlib import Path

import pytest

from assistants import TERMINAL, NotFound
from assistants.api import Api

BOT = Path(__file__).resolve().parent.parent / "bot"
HOPS = {"to_thread", "run_in_executor"}


def thread_hops() -> list[str]:
    """`file:function` of every thread hop written in bot/."""
    found = []
    for path in sorted(BOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in HOPS
                ):
                    found.append(f"{path.relative_to(BOT).as_posix()}:{function.name}")
    return found


def test_no_thread_hop_is_written_in_the_frontends():
    assert thread_hops() == []


def test_every_api_call_is_awaitable():
    calls = [
        (name, fn)
        for name, fn in inspect.getmembers(Api, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert len(calls) > 20
    assert [name for name, fn in calls if not inspect.iscoroutinefunction(fn)] == []


async def test_an_api_call_runs_on_the_core_threads_and_its_errors_reach_the_caller(core):
    seen: list[str] = []
    created = core.assistants.create(TERMINAL, "helper", "Answer.", starters=["hi"])
    original = core.assistants.by_id

    def by_id(assistant_id):  # the real method, noting which thread ran it
        seen.append(threading.current_thread().name)
        return original(assistant_id)

    core.assistants.by_id = by_id
    assert (await core.api.assistant_by_id(created.id)).starters == ["hi"]
    assert seen and seen[0].startswith("fewtune-core")
    with pytest.raises(NotFound):  # the service's own error, unchanged
        await core.api.assistant(TERMINAL, "nope")
