"""A job's adapter: its model name, its atomic publication to the served adapters, its download.

The name is `ft:<base>:<suffix>:<job id>` (OpenAI's shape; `ft:<base>::<job id>` without a
suffix). The folder FEWTUNE_HOME/adapters/<name>/ is what the engine serves under that name, so
publishing is a copy into a temporary folder beside it and one rename: the engine never sees a
half-written adapter.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
from pathlib import Path

from training.served_adapters import ADAPTER_FILES, adapter_dir, valid_adapter_name

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def fine_tuned_model_name(base: str, suffix: str | None, job_id: str) -> str | None:
    """The adapter's model name, or None when it would not be a safe adapter name (too long)."""
    safe_base = _UNSAFE.sub("-", base).replace("..", "-")  # "org/model" ids hold a slash
    name = f"ft:{safe_base}:{suffix or ''}:{job_id}"
    return name if valid_adapter_name(name) else None


README = """# {name}

A LoRA adapter (PEFT format) trained by fewtune, fine-tuning job `{job_id}`.

- Base model: `{base}` (adapter_config.json `base_model_name_or_path`: `{base_path}`)
- Hyperparameters: {hyperparameters}
- Trained tokens: {trained_tokens}

Load it with peft:

    from peft import AutoPeftModelForCausalLM
    model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")

or serve it with vLLM: `vllm serve <base> --enable-lora --lora-modules {name}=path/to/folder`.
"""


def publish_adapter(source: Path, adapters_path: Path, name: str, readme: str) -> Path:
    """Copy the PEFT folder `source` to adapters_path/<name> atomically; returns the new folder."""
    if not valid_adapter_name(name):
        raise ValueError(f"not a safe adapter name: {name!r}")
    missing = [file for file in ADAPTER_FILES if not (source / file).is_file()]
    if missing:
        raise FileNotFoundError(f"the trained adapter has no {missing[0]}")
    adapters_path.mkdir(parents=True, exist_ok=True)
    target = adapters_path / name
    temporary = adapters_path / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary)
    (temporary / "README.md").write_text(readme, encoding="utf-8")
    if target.exists():  # a resumed job publishing again: swap the old one out first
        old = adapters_path / f".old-{name}-{os.getpid()}"
        os.replace(target, old)
        os.replace(temporary, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, target)
    return target


def adapter_archive(adapters_path: Path, name: str) -> bytes | None:
    """The served adapter `name` as a .tar.gz with its files at the archive's root, or None."""
    folder = adapter_dir(adapters_path, name)
    if folder is None:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                archive.add(path, arcname=path.name)
    return buffer.getvalue()
