"""Many chats at once: `fewtune serve` (continuous batching, mixed adapters) beside llama-server.

    .venv/bin/python bench/concurrent_chats.py                      # 1, 4, 8, 16 at once
    .venv/bin/python bench/concurrent_chats.py --concurrency 1 8 --no-llama

For each N, N streamed chats are sent at the same moment through the openai client (greedy,
`--tokens` tokens asked each); half of fewtune's go to LoRA adapters (random, rank 8, made here
on the embedded SmolLM2), each to a different one. Reported: aggregate completion tokens/s
(all tokens over the wall time from the first request to the last token), and time to first
token p50/p99 over the N chats.

llama.cpp's own server runs beside it in the same run: `llama-server -np N` (continuous
batching, N slots) on the same GGUF, with the same threads, base model only (its LoRA route
needs adapters converted to GGUF). It is built from source by this script the first time:
llama.cpp's source from llama-cpp-python's sdist on PyPI, cmake, about 7 minutes on 2 cores,
kept in ~/.cache/fewtune-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LLAMA_CPP_PYTHON = "0.3.36"  # whose sdist carries the llama.cpp source built here
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fewtune-bench"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant who writes long, vivid stories."},
    {"role": "user", "content": "Write a long story about a robot who learns to paint."},
]


def llama_server() -> Path:
    """llama-server, built from source once."""
    source = CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    binary = source / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        print("downloading llama.cpp's source (llama-cpp-python's sdist)...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp],
            check=True,
        )  # fmt: skip
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.move(Path(tmp) / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp",
                    source)  # fmt: skip
    print("building llama-server (about 7 minutes on 2 cores)...", flush=True)
    options = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF",
               "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON"]  # fmt: skip
    subprocess.run(["cmake", "-B", "build", *options], cwd=source, check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", "build", "--target", "llama-server", "-j", jobs],
                   cwd=source, check=True)  # fmt: skip
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_llama(binary: Path, slots: int, threads: int) -> tuple[subprocess.Popen, str]:
    from training.base_models import embedded_gguf

    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-m", str(embedded_gguf()), "-np", str(slots), "-c", str(slots * 1024),
         "-t", str(threads), "-tb", str(threads), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, f"{url}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("llama-server did not start")


def make_adapters(settings, count: int) -> list[str]:
    """`count` random rank-8 LoRA adapters on the base model, served under adapters/."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.base_models import resolve_base_model

    names = [f"bench-{i}" for i in range(count)]
    missing = [n for n in names if not (settings.adapters_path / n).exists()]
    if missing:
        base = AutoModelForCausalLM.from_pretrained(resolve_base_model(settings.server.model,
                                                                       settings))  # fmt: skip
        for index, name in enumerate(missing):
            torch.manual_seed(index)
            config = LoraConfig(r=8, lora_alpha=16, init_lora_weights="gaussian",
                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"])  # fmt: skip
            model = get_peft_model(base, config)
            model.save_pretrained(settings.adapters_path / name)
            base = model.unload()
    return names


async def one_chat(client, model: str, tokens: int, start: float) -> tuple[float, float, int]:
    """(first token after, last token after, completion tokens) of one streamed chat."""
    stream = await client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=0, max_tokens=tokens, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    first = last = 0.0
    count = pieces = 0
    async for chunk in stream:
        now = time.perf_counter() - start
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            first = first or now
            last = now
        if chunk.usage:
            count = chunk.usage.completion_tokens
    return first, last, count or pieces


async def burst(base_url: str, key: str, models: list[str], tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    start = time.perf_counter()
    results = await asyncio.gather(*(one_chat(client, m, tokens, start) for m in models))
    await client.close()
    wall = max(r[1] for r in results)
    firsts = sorted(r[0] for r in results)
    total = sum(r[2] for r in results)
    return {
        "chats": len(models),
        "tokens": total,
        "tokens_per_s": total / wall,
        "ttft_p50": statistics.median(firsts),
        "ttft_p99": firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))],
        "wall_s": wall,
    }


def models_for(n: int, base: str, adapters: list[str]) -> list[str]:
    """Half the chats on the base model, the other half each on a different adapter."""
    return [base if i % 2 == 0 else adapters[(i // 2) % len(adapters)] for i in range(n)]


def main() -> None:
    import torch

    from assistants.local_server import ensure_local_server, stop_local_server
    from storage.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--home", default=None, help="FEWTUNE_HOME (default: a new temp one)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-llama", action="store_true", help="skip llama-server")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="fewtune-bench-"))
    widest = max(args.concurrency)
    (home / "fewtune.toml").write_text(
        f"[server]\nmax_batch = {widest}\nmax_waiting = {widest}\n", encoding="utf-8"
    )
    settings = load_settings(home)
    adapters = make_adapters(settings, max(1, widest // 2))
    print(f"threads {args.threads}; {args.tokens} tokens a chat, greedy; home {home}", flush=True)
    results: dict[str, dict[int, dict]] = {"fewtune": {}, "llama-server": {}}
    server = ensure_local_server(settings)
    try:
        base = settings.server.model
        asyncio.run(burst(server.base_url, server.token, models_for(2, base, adapters), 8))  # warm
        for n in args.concurrency:
            figures = asyncio.run(
                burst(server.base_url, server.token, models_for(n, base, adapters), args.tokens)
            )
            results["fewtune"][n] = figures
            print("fewtune", n, json.dumps(figures), flush=True)
    finally:
        stop_local_server(settings)
    if not args.no_llama:
        binary = llama_server()
        for n in args.concurrency:
            process, url = start_llama(binary, n, args.threads)
            try:
                asyncio.run(burst(url, "none", ["base"] * 2, 8))  # warm
                figures = asyncio.run(burst(url, "none", ["base"] * n, args.tokens))
            finally:
                process.kill()
                process.wait()
            results["llama-server"][n] = figures
            print("llama-server", n, json.dumps(figures), flush=True)
    print()
    single = results["fewtune"].get(1, {}).get("tokens_per_s")
    ttft_single = results["fewtune"].get(1, {}).get("ttft_p50")
    print("| chats | fewtune tok/s | x one chat | llama-server tok/s | fewtune / llama | "
          "TTFT p50 / p99 (s) | llama TTFT p50 / p99 (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in args.concurrency:
        ours, theirs = results["fewtune"][n], results["llama-server"].get(n)
        times = f"{ours['ttft_p50']:.2f} / {ours['ttft_p99']:.2f}"
        if ttft_single:
            times += f" ({ours['ttft_p99'] / ttft_single:.1f}x one chat's)"
        row = [str(n), f"{ours['tokens_per_s']:.1f}",
               f"{ours['tokens_per_s'] / single:.2f}x" if single else "-",
               f"{theirs['tokens_per_s']:.1f}" if theirs else "-",
               f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x" if theirs else "-", times,
               f"{theirs['ttft_p50']:.2f} / {theirs['ttft_p99']:.2f}" if theirs else "-"]  # fmt: skip
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
