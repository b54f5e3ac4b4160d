"""Helpers for the server tests: a tiny model, a LoRA adapter, a real uvicorn server in a thread.

The tiny model is a 2-layer Llama built from a config (random weights) with the SmolLM2
tokenizer read from the embedded GGUF, so it has the real chat template and end token.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.settings import Settings, load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_tiny_model(folder: Path, **sizes: Any) -> Path:
    """Save a tiny random Llama with the SmolLM2 tokenizer into `folder`; `sizes` override its
    LlamaConfig (the trainer's tests use a smaller one with the usual initialisation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from training.base_models import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": True,
            # larger random weights: varied greedy text, not one repeated token
            "initializer_range": 0.5,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **sizes,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_adapter(
    model_dir: Path, adapters_path: Path, name: str, seed: int = 1, **lora: Any
) -> Path:
    """Save a random (non-zero) LoRA adapter for the model in `model_dir` as adapters/<name>."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    options: dict[str, Any] = {
        "r": 8,
        "lora_alpha": 64,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        "init_lora_weights": False,  # random B too, so the adapter changes the answers
        "task_type": "CAUSAL_LM",
    }
    config = LoraConfig(**{**options, **lora})
    peft_model = get_peft_model(base, config)
    target = adapters_path / name
    peft_model.save_pretrained(target)
    return target


def write_settings(home: Path, **server: Any) -> Settings:
    """FEWTUNE_HOME `home` with a [server] table holding `server`."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[server]"]
    for key, value in server.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = f'"{value}"'
        lines.append(f"{key} = {value}")
    (home / "fewtune.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_settings(home)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Serve `app` with a real uvicorn on 127.0.0.1 in a thread; yields the /v1 base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serving(
    settings: Settings, token: str, *, fine_tuning: bool = False
) -> Iterator[tuple[str, Any]]:
    """`fewtune serve`'s app, its engine loaded first, on loopback; yields (/v1 base URL, app).
    With `fine_tuning` its job worker runs too (running_app runs without lifespan events)."""
    from training.serving.app import create_app
    from training.serving.engine import ChatEngine

    engine = ChatEngine(settings)
    engine.load()
    app = create_app(settings, token, engine=engine)
    worker = app.state.finetune.worker
    if fine_tuning:
        worker.ensure_started()
    try:
        with running_app(app) as base_url:
            yield base_url, app
    finally:
        if fine_tuning:
            worker.stop()
        engine.close()
