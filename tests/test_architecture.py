"""The house's rules, checked on the source: no import cycles, and no model libraries in the
bot's process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "assistants", "storage", "training")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports, at any depth (function-level imports count), except
    those under `if TYPE_CHECKING:`, which never run."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(m for m in map(known, names) if m)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_import_cycles():
    modules = project_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["bot.cli", "bot.discord", "assistants"])
def test_frontends_and_core_load_no_model_library(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


TRAINING_ROOMS = ("training.serving", "training.finetune", "training.trainer")


def room_of(module: str) -> str:
    """The room of a training module, or "training" for the hall the rooms share."""
    return next((room for room in TRAINING_ROOMS if module.startswith(room)), "training")


def test_training_rooms_point_one_way():
    """serving -> finetune -> trainer, each may use the hall (training's own modules); no arrow
    back, and the hall uses no room."""
    allowed = {
        "training.serving": {"training.serving", "training.finetune", "training"},
        "training.finetune": {"training.finetune", "training.trainer", "training"},
        "training.trainer": {"training.trainer"},
        "training": {"training"},
    }
    modules = project_modules()
    wrong = sorted(
        (name, target)
        for name, path in modules.items()
        if name.startswith("training")
        for target in imports_of(path, modules)
        if target.startswith("training") and room_of(target) not in allowed[room_of(name)]
    )
    assert wrong == []
