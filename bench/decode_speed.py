"""Decode speed of one chat: fewtune's engine (and server) beside llama.cpp on the same GGUF.

    .venv/bin/python bench/decode_speed.py                 # engine (default decoder) vs llama.cpp
    .venv/bin/python bench/decode_speed.py --all --server  # every decoder, and through HTTP
    .venv/bin/python bench/decode_speed.py --server --llama-server  # both servers over HTTP

Decode speed is tokens per second after the first token (the prompt's prefill is excluded), for
one chat with greedy decoding, as `fewtune serve` runs it. llama.cpp runs the embedded
SmolLM2 GGUF through llama-cpp-python with the same prompt tokens and thread count; the bench
installs llama-cpp-python into this virtualenv if it is missing (it compiles llama.cpp: about 10
minutes on 2 cores; --no-install skips llama.cpp instead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant who writes long, vivid stories."},
    {"role": "user", "content": "Write a long story about a robot who learns to paint."},
]


def engine_speed(settings, tokens: int, runs: int) -> tuple[str, list[float]]:
    """tokens/s of ChatEngine.stream (what the server's handler runs) after the first token."""
    from training.serving.engine import ChatEngine, Sampling

    engine = ChatEngine(settings)
    engine.load()

    async def once() -> float:
        chat = await engine.prepare(
            engine.base_model, MESSAGES, Sampling(max_tokens=tokens, temperature=0)
        )
        first = last = 0.0
        usage = None
        async for delta in engine.stream(chat):
            now = time.perf_counter()
            if delta.text and not first:
                first = now
            last = now
            usage = delta.usage or usage
        assert usage is not None
        return (usage.completion_tokens - 1) / (last - first)

    speeds = [asyncio.run(once()) for _ in range(runs + 1)][1:]  # the first run warms up
    engine.close()
    return engine.decoder, speeds


def server_speed(settings, tokens: int, runs: int) -> list[float]:
    """tokens/s through a real `python -m training.serving` and the openai client (streaming)."""
    from assistants.local_server import ensure_local_server, stop_local_server

    server = ensure_local_server(settings)
    try:
        return http_speed(server.base_url, server.token, settings.server.model, tokens, runs)
    finally:
        stop_local_server(settings)


def http_speed(base_url: str, key: str, model: str, tokens: int, runs: int) -> list[float]:
    """tokens/s after the first token of a streamed chat (the openai client), after a warm-up."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    speeds = []
    for _ in range(runs + 1):
        stream = client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            temperature=0,
            max_tokens=tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        first = last = 0.0
        count = 0
        for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].delta.content and not first:
                first = now
            if chunk.choices:
                last = now
            if chunk.usage:
                count = chunk.usage.completion_tokens
        speeds.append((count - 1) / (last - first))
    return speeds[1:]


def llama_server_speed(tokens: int, runs: int, threads: int) -> list[float]:
    """tokens/s of llama.cpp's own server on the embedded GGUF, through HTTP as fewtune serve
    is measured (built from source by bench/concurrent_chats.py, once)."""
    from concurrent_chats import llama_server, start_llama

    process, url = start_llama(llama_server(), 1, threads)
    try:
        return http_speed(url, "none", "base", tokens, runs)
    finally:
        process.kill()
        process.wait()


def llama_cpp_speed(tokens: int, runs: int, threads: int, install: bool) -> list[float] | None:
    """tokens/s of llama.cpp on the embedded GGUF, same prompt tokens, greedy."""
    try:
        import llama_cpp
    except ImportError:
        if not install:
            return None
        print("installing llama-cpp-python (compiles llama.cpp, about 10 minutes)...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "llama-cpp-python"], check=True)
        import llama_cpp
    from transformers import AutoTokenizer

    from training.base_models import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompt = list(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)["input_ids"])
    llm = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=2048, n_threads=threads, n_batch=512, verbose=False
    )
    speeds = []
    for _ in range(runs + 1):
        llm.reset()
        first = 0.0
        count = 0
        for _token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count >= tokens:  # llama.cpp goes on past the end token: same length as fewtune
                break
        speeds.append((count - 1) / (time.perf_counter() - first))
    return speeds[1:]


def main() -> None:
    import torch

    from storage.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate per run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (after one warm-up)")
    parser.add_argument("--home", default=None, help="FEWTUNE_HOME (holds the converted model)")
    parser.add_argument("--all", action="store_true", help="also fast-fp32 and transformers")
    parser.add_argument("--server", action="store_true", help="also through the HTTP server")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--no-install", action="store_true", help="skip llama.cpp if missing")
    parser.add_argument(
        "--llama-server",
        action="store_true",
        help="llama.cpp's server over HTTP instead of llama-cpp-python in process (with --server)",
    )
    args = parser.parse_args()

    settings = load_settings(args.home)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"CPU threads: {threads}; torch {torch.__version__}; {args.tokens} tokens, greedy")
    results: dict[str, float] = {}

    variants = [{}]
    if args.all:
        variants += [{"int8_weights": False}, {"fast_decode": False}]
    from dataclasses import replace

    for change in variants:
        varied = replace(settings, server=replace(settings.server, **change))
        decoder, speeds = engine_speed(varied, args.tokens, args.runs)
        results[f"fewtune engine ({decoder})"] = statistics.median(speeds)
    if args.server:
        results["fewtune serve over HTTP (default decoder)"] = statistics.median(
            server_speed(settings, args.tokens, args.runs)
        )
    if args.llama_server:
        llama = llama_server_speed(args.tokens, args.runs, threads)
    else:
        llama = llama_cpp_speed(args.tokens, args.runs, threads, not args.no_install)
    if llama:
        results["llama.cpp (same GGUF)"] = statistics.median(llama)

    width = max(len(name) for name in results)
    reference = results.get("llama.cpp (same GGUF)")
    print()
    for name, speed in results.items():
        ratio = f"  {speed / reference:.2f}x llama.cpp" if reference else ""
        print(f"{name:<{width}}  {speed:6.1f} tokens/s{ratio}")


if __name__ == "__main__":
    main()
