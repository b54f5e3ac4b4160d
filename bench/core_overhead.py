"""Per-message overhead of the core, recall of the example index, and peak memory.

    .venv/bin/python bench/core_overhead.py                 # quick: 10 assistants x 10,000 examples
    .venv/bin/python bench/core_overhead.py --assistants 100  # full: 1,000,000 examples (~25 min)
    .venv/bin/python bench/core_overhead.py --assistants 2 --examples 10000 --messages 200 \
        --selector similarity,coverage                      # selectors side by side, one run
    .venv/bin/python bench/core_overhead.py --assistants 100 --examples 1000 \
        --knowledge-files 20                                # knowledge on: 20 files each

Overhead is everything the core does for one message except the model's own time: store the
message, embed it (for real), select k examples from the assistant's index, build the prompt,
record the reply. The model is an instant OpenAI-compatible stub on loopback, reached through
the real openai client, so the whole path runs; `Reply.overhead_ms` excludes the model call.

The index is filled with synthetic vectors (embedding a million texts takes hours here): each is a
real embedding of a number-word text plus noise, so the data keeps the cluster structure of real
embeddings. Recall@k is measured on one assistant of 10,000 REAL embeddings, against exact search
with numpy over the same vectors (HNSW recall on random vectors says little about real ones).

With --knowledge-files N every assistant also holds N knowledge files of --chunks-per-file chunks
(rows in SQLite, synthetic vectors of the same kind in its knowledge collection, chunk texts of
about 200 word pieces), so each message also queries the knowledge index, reads its passages and
puts those above min_score (most, here) into the prompt: the per-message cost of knowledge on.
Twins of the assistants without knowledge ("plain-N", the same examples) get the same messages in
alternating blocks, so knowledge on and off are measured side by side under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from num2words import num2words  # noqa: E402

from assistants import Actor, Core  # noqa: E402

LANGS = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "ar", "ja", "ko"]


def texts(n: int, seed: int = 0) -> list[str]:
    """n distinct number-word texts (numbers up to 99,999 in 12 languages)."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(num2words(rng.randrange(100_000), lang=rng.choice(LANGS)))
    return sorted(out)


def stub_server() -> tuple[str, threading.Thread]:
    """An instant OpenAI-compatible chat endpoint (streams "42") on 127.0.0.1."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "42"}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            ]
            body = (
                b"".join(
                    b"data: "
                    + json.dumps(
                        {
                            "id": "x",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": "instant",
                            **c,
                        }
                    ).encode()
                    + b"\n\n"
                    for c in chunks
                )
                + b"data: [DONE]\n\n"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/v1", thread


def insert_rows(core: Core, assistant_id: int, rows: list[dict]) -> list[int]:
    """Bulk-insert example rows straight into SQLite (the bench fills the index itself)."""
    with core.db.conn:
        core.db.table("examples").insert_all(rows, batch_size=5000)
    found = core.db.execute(
        "SELECT id FROM examples WHERE assistant_id = ? ORDER BY id", [assistant_id]
    )
    return [r[0] for r in found]


def fill(
    core: Core,
    assistants: int,
    per: int,
    base: np.ndarray,
    base_texts: list[str],
    prefix: str = "bench",
) -> list[int]:
    """Create assistants with `per` examples each: rows in SQLite, synthetic vectors in the index."""
    rng = np.random.default_rng(0)
    index = core.index()
    ids_by_assistant = []
    started = time.perf_counter()
    for a in range(assistants):
        assistant = core.assistants.create(
            Actor("bench"), f"{prefix}-{a}", "Answer with digits.", model="instant:instant"
        )
        picks = rng.integers(0, len(base), per)
        noise = rng.standard_normal((per, base.shape[1])).astype(np.float32) * 0.02
        vectors = base[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            {
                "assistant_id": assistant.id,
                "input": f"{base_texts[p]} #{i}",
                "output": str(i),
                "source": "import",
                "author_id": "bench",
                "content_hash": f"{assistant.id}-{i}",
                "created_at": "2026-01-01",
            }
            for i, p in enumerate(picks)
        ]
        ids = insert_rows(core, assistant.id, rows)
        index.add(assistant.id, ids, vectors=vectors)
        ids_by_assistant.append(assistant.id)
        done = (a + 1) * per
        rate = done / (time.perf_counter() - started)
        print(
            f"  filled {a + 1}/{assistants} assistants ({done:,} vectors, {rate:,.0f}/s)",
            flush=True,
        )
    return ids_by_assistant


def fill_knowledge(
    core: Core,
    assistant_ids: list[int],
    files: int,
    per_file: int,
    base: np.ndarray,
    base_texts: list[str],
) -> None:
    """`files` knowledge files of `per_file` chunks for each assistant: rows in SQLite, synthetic
    vectors in its knowledge collection."""
    rng = np.random.default_rng(1)
    index = core.knowledge_index()
    started = time.perf_counter()
    for n, assistant_id in enumerate(assistant_ids, 1):
        with core.db.conn:
            core.db.table("knowledge_files").insert_all(
                {
                    "assistant_id": assistant_id,
                    "name": f"file-{f}.md",
                    "kind": "md",
                    "size": per_file * 800,
                    "sha256": f"{assistant_id}-{f}",
                    "chunks": per_file,
                    "added_by": "bench",
                    "added_at": "2026-01-01",
                }
                for f in range(files)
            )
        file_ids = [
            r[0]
            for r in core.db.execute(
                "SELECT id FROM knowledge_files WHERE assistant_id = ? ORDER BY id", [assistant_id]
            )
        ]
        picks = rng.integers(0, len(base), files * per_file)
        rows = [
            {
                "file_id": file_ids[i // per_file],
                "assistant_id": assistant_id,
                "position": i % per_file,
                "location": f"Part {i % per_file}",
                "text": " ".join([base_texts[p]] * 40)[:800],  # about a chunk's 200 word pieces
            }
            for i, p in enumerate(picks)
        ]
        with core.db.conn:
            core.db.table("knowledge_chunks").insert_all(rows, batch_size=5000)
        ids = [
            r[0]
            for r in core.db.execute(
                "SELECT id FROM knowledge_chunks WHERE assistant_id = ? ORDER BY id",
                [assistant_id],
            )
        ]
        noise = rng.standard_normal((len(picks), base.shape[1])).astype(np.float32) * 0.02
        vectors = base[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.add(assistant_id, ids, vectors=vectors)
        if n % 10 == 0 or n == len(assistant_ids):
            rate = n * files * per_file / (time.perf_counter() - started)
            print(f"  knowledge for {n}/{len(assistant_ids)} assistants ({rate:,.0f} chunks/s)")


def recall(core: Core, k_values: list[int], n: int, queries: int) -> dict[int, float]:
    """Recall@k of the index against exact search, on n real embeddings of one assistant."""
    corpus = texts(n, seed=1)
    assistant = core.assistants.create(Actor("bench"), "recall", "x", model="instant:instant")
    started = time.perf_counter()
    vectors = core.embedder.embed(corpus)
    print(f"  embedded {n:,} texts for recall in {time.perf_counter() - started:.0f} s", flush=True)
    rows = [
        {
            "assistant_id": assistant.id,
            "input": t,
            "output": "0",
            "source": "import",
            "author_id": "bench",
            "content_hash": str(i),
            "created_at": "2026-01-01",
        }
        for i, t in enumerate(corpus)
    ]
    ids = insert_rows(core, assistant.id, rows)
    index = core.index()
    index.add(assistant.id, ids, vectors=vectors)
    query_vectors = core.embedder.embed(texts(queries, seed=2))
    id_array = np.asarray(ids)
    result = {}
    for k in k_values:
        found = 0
        for q in query_vectors:
            exact = set(id_array[np.argsort(-(vectors @ q))[:k]].tolist())
            approx = {h.example_id for h in index.query(assistant.id, q, k)}
            found += len(exact & approx)
        result[k] = found / (k * len(query_vectors))
    return result


async def measure(
    core: Core,
    names: list[str],
    messages: list[str],
    actor: Actor,
    passages: list[int] | None = None,
) -> tuple[list[float], list[float]]:
    """Per message: the core's wall-clock overhead, and the CPU time the whole process spent on
    the message (all threads; the stub model's share is a few dozen microseconds). On a machine
    shared with other work the CPU time is the steadier figure."""
    overheads, cpu = [], []
    for i, text in enumerate(messages):
        conversation = core.chat.start(actor, names[i % len(names)])
        started = time.process_time()
        reply = await core.chat.reply(actor, conversation.id, text)
        cpu.append((time.process_time() - started) * 1000)
        overheads.append(reply.overhead_ms)
        if passages is not None:
            passages.append(len(reply.sources))
    await core.providers.close()
    return overheads, cpu


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assistants", type=int, default=10)
    parser.add_argument("--examples", type=int, default=10_000, help="per assistant")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--recall-size", type=int, default=10_000)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--knowledge-files", type=int, default=0, help="per assistant")
    parser.add_argument("--chunks-per-file", type=int, default=10)
    parser.add_argument(
        "--selector",
        default="similarity",
        help="comma-separated; each is measured in turn on the same index and messages",
    )
    args = parser.parse_args()
    selectors = args.selector.split(",")

    home = args.home or Path(tempfile.mkdtemp(prefix="fewtune-bench-"))
    url, _ = stub_server()
    (home / "fewtune.toml").write_text(
        f'[providers.instant]\nbase_url = "{url}"\n', encoding="utf-8"
    )
    core = Core.open(home)
    print(f"home {home}")
    names = [f"bench-{a}" for a in range(args.assistants)]
    filled = core.db.execute(
        "SELECT count(*) FROM assistants WHERE name LIKE 'bench-%'"
    ).fetchone()[0]  # (with knowledge, the plain twins were filled with them)
    if filled == args.assistants:  # a --home filled by an earlier run: measure again
        print(f"  reusing the {args.assistants} filled assistants in {home}")
    else:
        base_texts = texts(2000)
        base = core.embedder.embed(base_texts)
        ids = fill(core, args.assistants, args.examples, base, base_texts)
        if args.knowledge_files:
            fill_knowledge(core, ids, args.knowledge_files, args.chunks_per_file, base, base_texts)
            fill(core, args.assistants, args.examples, base, base_texts, prefix="plain")
    actor = Actor("bench")
    # Warm-up: clients, caches, and every assistant's collection once (a running bot has the
    # assistants it serves open; the first query of a collection loads it from disk).
    warm = max(20, args.assistants)
    messages = texts(args.messages + warm, seed=3)
    measured: dict[str, tuple[list[float], list[float]]] = {}
    passages: list[int] = []
    # With knowledge, the same messages also go to twins without it ("plain-N": the same
    # examples), in alternating blocks, so both are measured under the same load.
    groups = {"": names}
    if args.knowledge_files:
        plain = [f"plain-{a}" for a in range(args.assistants)]
        groups = {", knowledge on": names, ", knowledge off": plain}
    for selector in selectors:
        for name in [n for group in groups.values() for n in group]:
            core.assistants.edit(actor, name, k=args.k, selector=selector)
        for group in groups.values():
            asyncio.run(measure(core, group, messages[:warm], actor))
        for label in groups:
            measured[selector + label] = ([], [])
        for start in range(warm, len(messages), 20):
            for label, group in groups.items():
                block = messages[start : start + 20]
                counted = passages if label == ", knowledge on" else None
                overheads, cpu = asyncio.run(measure(core, group, block, actor, counted))
                measured[selector + label][0].extend(overheads)
                measured[selector + label][1].extend(cpu)
    recalls = recall(core, [args.k, 10], args.recall_size, 200) if args.recall_size else {}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = args.assistants * args.examples
    print()
    print(f"index: {args.assistants} assistants x {args.examples:,} examples = {total:,} vectors")
    if args.knowledge_files:
        chunks = args.assistants * args.knowledge_files * args.chunks_per_file
        print(
            f"knowledge: {args.knowledge_files} files x {args.chunks_per_file} chunks each "
            f"= {chunks:,} chunks; passages in a prompt: mean "
            f"{statistics.mean(passages or [0]):.1f} (knowledge_k {core.settings.knowledge.knowledge_k})"
        )
    for selector, (overheads, cpu) in measured.items():
        print(f"per-message core overhead over {len(overheads)} messages (k={args.k}, {selector}):")
        print(
            f"  p50 {percentile(overheads, 50):.1f} ms   p99 {percentile(overheads, 99):.1f} ms   "
            f"mean {statistics.mean(overheads):.1f} ms   (goal: p50 <= 15, p99 <= 50)"
        )
        print(
            f"  process CPU per message (the whole reply, client included): "
            f"p50 {percentile(cpu, 50):.1f} ms   p99 {percentile(cpu, 99):.1f} ms"
        )
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for k, value in recalls.items():
        print(
            f"recall@{k} (HNSW vs exact, {args.recall_size:,} real embeddings): {value:.3f}   (goal >= 0.95)"
        )
    print(f"peak memory (RSS): {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
