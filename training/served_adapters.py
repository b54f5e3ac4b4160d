"""LoRA adapters the server can serve: FEWTUNE_HOME/adapters/<name>/ in PEFT format.

Adapter names come from requests (`model`), so they are checked against a strict pattern and
resolved under the adapters folder only: no name ever becomes an arbitrary path.
"""

from __future__ import annotations

import re
from pathlib import Path

# Letters, digits and . _ : - (OpenAI-style "ft:base:suffix" names fit); no slash, no "..".
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def valid_adapter_name(name: str) -> bool:
    """True when `name` can name an adapter folder safely."""
    return bool(ADAPTER_NAME.fullmatch(name)) and ".." not in name


def adapter_dir(adapters_path: Path, name: str) -> Path | None:
    """The folder of adapter `name` under `adapters_path`, or None if it is not a served adapter."""
    if not valid_adapter_name(name):
        return None
    root = adapters_path.resolve()
    folder = (root / name).resolve()
    if folder.parent != root:  # a symlink pointing elsewhere is not served
        return None
    if not all((folder / file).is_file() for file in ADAPTER_FILES):
        return None
    return folder


def list_adapters(adapters_path: Path) -> list[str]:
    """Names of the complete adapters under `adapters_path`, sorted."""
    if not adapters_path.is_dir():
        return []
    return sorted(
        entry.name
        for entry in adapters_path.iterdir()
        if entry.is_dir() and adapter_dir(adapters_path, entry.name) is not None
    )
