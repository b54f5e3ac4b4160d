"""Many chats at once: `fewtune serve` (continuous batching, mixed adapters) beside llama-server.

    .venv/bin/python bench/concurrent_chats.py                      # 1, 4, 8, 16 at once
    .venv/bin/python bench/concurrent_chats.py --concurrency 1 8 --no-llama

For each N, two ways of N people chatting, through the openai client (streamed, greedy,
`--tokens` tokens asked each); half of fewtune's chats go to LoRA adapters (random, rank 8,
made here on the embedded SmolLM2), each to a different one:
- burst: N chats sent at the same moment;
- steady: N users, each sending `--rounds` chats one after the other, the users' first chats
  spread over one chat's length (people do not press enter together), so chats join and leave
  a running batch.
Reported: aggregate completion tokens/s (all tokens over the time from the first request to the
last token) and time to first token p50/p99 over the chats. The machine's speed drifts, so the
two servers take turns: each measurement runs `--repeat` times, fewtune then llama-server, and
the medians are shown.

llama.cpp's own server runs beside it in the same run: `llama-server -np N` (continuous
batching, N slots) on the same GGUF, with the same threads, base model only (its LoRA route
needs adapters converted to GGUF). It is built from source by this script the first time:
llama.cpp's source from llama-cpp-python's sdist on PyPI, cmake, about 7 minutes on 2 cores,
kept in ~/.cache/fewtune-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
SUBJECTS = ["a robot who learns to paint", "a lighthouse keeper's cat", "a city under the sea",
            "the last train of the night", "a clockmaker's apprentice", "a dragon who fears fire",
            "two rival bakers", "a map that redraws itself"]  # fmt: skip


def messages(index: int) -> list[dict[str, str]]:
    """Chat `index`'s prompt: each one its own from the first tokens, so that no server answers
    from a cache of an earlier prompt (llama-server keeps each slot's last prompt and reuses
    its longest shared prefix; it is also asked not to, `cache_prompt: false`)."""
    subject = SUBJECTS[index % len(SUBJECTS)]
    return [
        {"role": "system", "content": f"Story {index}. You write long, vivid stories."},
        {"role": "user", "content": f"Write a long story about {subject}."},
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


async def one_chat(
    client, model: str, tokens: int, start: float, index: int
) -> tuple[float, float, int]:
    """(first token after, last token after, completion tokens) of one streamed chat. A
    connection the server closed while it sat in the client's pool (keep-alive, 5 s) fails
    before any answer; such a request is sent again (counted in RECONNECTS)."""
    import openai

    for attempt in range(3):
        try:
            return await _stream_once(client, model, tokens, start, index)
        except openai.APIConnectionError:
            if attempt == 2:
                raise
            RECONNECTS[0] += 1
    raise AssertionError("unreachable")


RECONNECTS = [0]


async def _stream_once(
    client, model: str, tokens: int, start: float, index: int
) -> tuple[float, float, int]:
    stream = await client.chat.completions.create(
        model=model, messages=messages(index), temperature=0, max_tokens=tokens, stream=True,
        stream_options={"include_usage": True}, extra_body={"cache_prompt": False},
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


async def chats(
    base_url: str, key: str, models: list[str], tokens: int, rounds: int = 1, spread: float = 0
) -> dict:
    """User i sends `rounds` chats to models[i] one after the other, its first one after
    i * spread / len(models) seconds; the figures over all chats."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)
    start = time.perf_counter()
    numbers = itertools.count(next(_runs) * 1000)

    async def user(index: int, model: str) -> list[tuple[float, float, int]]:
        await asyncio.sleep(index * spread / len(models))
        done = []
        for round_ in range(rounds):
            began = time.perf_counter() - start
            first, last, count = await one_chat(
                client, model, tokens, start, next(numbers) + round_ * len(models)
            )
            done.append((first - began, last, count))
        return done

    per_user = await asyncio.gather(*(user(i, model) for i, model in enumerate(models)))
    results = [r for rs in per_user for r in rs]
    await client.close()
    wall = max(r[1] for r in results)
    firsts = sorted(r[0] for r in results)
    total = sum(r[2] for r in results)
    return {
        "chats": len(results),
        "tokens": total,
        "tokens_per_s": total / wall,
        "ttft_p50": statistics.median(firsts),
        "ttft_p99": firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))],
        "wall_s": wall,
        "reconnects": RECONNECTS[0],
    }


_runs = itertools.count()  # each run's chats get numbers no earlier run used


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


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
    parser.add_argument("--rounds", type=int, default=3, help="chats per user, steady")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
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
    binary = None if args.no_llama else llama_server()
    print(f"threads {args.threads}; {args.tokens} tokens a chat, greedy; home {home}", flush=True)
    results: dict[str, dict[str, dict[int, dict]]] = {}
    server = ensure_local_server(settings)
    ours = (server.base_url, server.token)
    base = settings.server.model
    try:
        asyncio.run(chats(*ours, models_for(2, base, adapters), 8))  # warm up
        one_chat_s = 0.0
        for n in args.concurrency:
            llama = None
            if binary is not None:
                process, url = start_llama(binary, n, args.threads)
                llama = (url, "none")
                asyncio.run(chats(*llama, ["base"] * 2, 8))  # warm up
            try:
                for way in ("burst", "steady"):
                    rounds, spread = (1, 0.0) if way == "burst" else (args.rounds, one_chat_s)
                    runs: dict[str, list[dict]] = {"fewtune": [], "llama-server": []}
                    for _ in range(args.repeat):
                        mixed = models_for(n, base, adapters)
                        runs["fewtune"].append(
                            asyncio.run(chats(*ours, mixed, args.tokens, rounds, spread))
                        )
                        if llama is not None:
                            runs["llama-server"].append(
                                asyncio.run(
                                    chats(*llama, ["base"] * n, args.tokens, rounds, spread)
                                )
                            )
                    for name, measured in runs.items():
                        if measured:
                            figures = median_of(measured)
                            results.setdefault(way, {}).setdefault(name, {})[n] = figures
                            print(way, name, n, json.dumps(figures), flush=True)
                    if n == 1 and way == "burst":
                        one_chat_s = results["burst"]["fewtune"][1]["wall_s"]
            finally:
                if binary is not None:
                    process.kill()
                    process.wait()
    finally:
        stop_local_server(settings)
    for way, servers in results.items():
        print(f"\n{way}")
        table(servers, args.concurrency)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


def table(servers: dict[str, dict[int, dict]], concurrency: list[int]) -> None:
    ours, theirs = servers["fewtune"], servers.get("llama-server", {})
    single, ttft_single = ours.get(1, {}).get("tokens_per_s"), ours.get(1, {}).get("ttft_p50")
    print("| chats | fewtune tok/s | x one chat | llama-server tok/s | fewtune / llama | "
          "TTFT p50 / p99 (s) | llama TTFT p50 / p99 (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in concurrency:
        mine, other = ours[n], theirs.get(n)
        times = f"{mine['ttft_p50']:.2f} / {mine['ttft_p99']:.2f}"
        if ttft_single:
            times += f" (p99 {mine['ttft_p99'] / ttft_single:.1f}x one chat's)"
        row = [str(n), f"{mine['tokens_per_s']:.1f}",
               f"{mine['tokens_per_s'] / single:.2f}x" if single else "-",
               f"{other['tokens_per_s']:.1f}" if other else "-",
               f"{mine['tokens_per_s'] / other['tokens_per_s']:.2f}x" if other else "-", times,
               f"{other['ttft_p50']:.2f} / {other['ttft_p99']:.2f}" if other else "-"]  # fmt: skip
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
