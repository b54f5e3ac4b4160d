"""200 users chat at once through the loopback Discord; the model answers after a fixed 1 s.

The real bot (real discord.py client, real Core, the tests' fake model (tests/fake_model.py) in its
own process, answering "echo: ..." after 1 s) against tests/discord_fake. Every user runs `/chat` at the same
moment; an answer counts once its feedback buttons are on it (the reply is complete and stored).

Measured: wall time from the first command to the last complete answer (goal: under 1.5 s plus
the core's overhead), how many were answered, and the event loop's lag: a task sleeping 5 ms in a
loop records how late it wakes (goal: never above 50 ms). The fake Discord and its 200 users run
in a process of their own (`--drive`), so the lag measured is the bot's own loop. Also measured:
the core's overhead per message (store, embed, select, build, record: Reply.overhead_ms, which
in a burst includes waiting for the core's threads), and the CPU time of each process and of
the bot's threads doing core work. 1.5 s is the model's 1 s plus half a second for Discord;
"the core's overhead" for a burst is read two ways, both printed:
- measured directly: after the Discord burst, the same burst through the core alone (what
  `/chat` asks of the core for 200 new users at once, no Discord, from the same cold start);
  its wall time less the model's delay is the core's overhead, so Discord's share (wall time
  less the core alone's) must stay under 0.5 s;
- as CPU time: the CPU of the core's threads over the Discord burst, its model calls included
  (the openai client's thread is the core's: `assistants/providers.py`), which shares 2 cores
  and one GIL with the bot and so adds to the wall time in full. Until this session the model
  calls were left out of this sum; both sums are printed.

    .venv/bin/python bench/discord_load.py [--users 200] [--delay 1.0] [--runs 3]

With `--real-model` the bot's assistants use the embedded SmolLM2 through `fewtune serve` on
this machine instead (continuous batching, issue 13; 128-token answers): then what counts is
that every user is answered and how soon the first streamed text shows (the time from the
command to the first edit holding text, p50 and p99); the echo model's goals do not apply.

    .venv/bin/python bench/discord_load.py --real-model --users 20 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from discord_fake import FakeDiscord  # noqa: E402


def start_fake_model(delay: float) -> tuple[subprocess.Popen, str]:
    """The tests' fake model (tests/fake_model.py), answering after `delay` seconds, in a
    process of its own; returns (process, /v1 url)."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_model.py"), "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url:
        raise SystemExit("the fake model did not start")
    return process, url


def cpu_seconds(stat: str | int) -> float:
    """CPU time (user + system) used so far by a process (its pid) or a thread (the path of its
    /proc stat file), from /proc (Linux); nan elsewhere."""
    path = Path(f"/proc/{stat}/stat") if isinstance(stat, int) else Path(stat)
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CORE_THREADS = ("fewtune-core", "asyncio_")
MODEL_THREADS = ("fewtune-models",)


def thread_cpu(prefixes: tuple[str, ...]) -> float:
    """CPU seconds so far of this process's threads named with one of `prefixes`. The core's
    work runs on its own pool (`fewtune-core`: find or start the conversation, store, embed,
    select, build, record) and on the default pool the bot hands core calls to (`asyncio_`:
    linking messages, noting threads); its model calls (the openai client) on the core's model
    loop (`fewtune-models`). Linux; nan elsewhere."""
    import threading

    return sum(
        cpu_seconds(f"/proc/self/task/{thread.native_id}/stat")
        for thread in threading.enumerate()
        if thread.name.startswith(prefixes)
    )


class LagMonitor:
    """How late a 5 ms sleep wakes up, sampled continuously."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self.at: list[float] = []  # when each sample ended (perf_counter)
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - started - self.interval)
            self.at.append(time.perf_counter())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


# -- the users' side: FakeDiscord in its own process --------------------------------------


def say(message: dict) -> None:
    print(json.dumps(message), flush=True)


async def hear() -> str:
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def drive(users: int, timeout: float) -> None:
    """The fake Discord and its users, in a process of their own (`--drive`): their work never
    runs on the bot's event loop, so the lag measured there is the bot's. Talks JSON lines."""
    gc.freeze()
    async with FakeDiscord() as fake:
        owner = fake.add_user("owner")
        guild = fake.add_guild("bench", owner)
        channel = fake.channel(guild)
        people = [fake.add_user(f"user{i}") for i in range(users)]
        for person in people:
            fake.add_member(guild, person)
        say(
            {
                "api_base": fake.api_base,
                "gateway": fake.gateway_url,
                "token": fake.token,
                "guild": str(guild.id),
                "owner": str(owner.id),
            }
        )
        await fake.wait_until(lambda: fake.sessions and fake.commands, 60, "the bot")
        assert await hear() == "ready"
        # Warm up (embedder, index, HTTP pools) with one chat, outside the measurement.
        warm = await fake.slash(
            "chat", user=owner, channel=channel, options={"assistant": "bench", "message": "hi"}
        )
        await fake.wait_until(lambda: warm.original and warm.original.buttons(), 60)
        say({"warm": True})
        assert await hear() == "go"
        sent = await asyncio.gather(
            *(
                fake.slash(
                    "chat",
                    user=p,
                    channel=channel,
                    options={"assistant": "bench", "message": f"hello from {p.name}"},
                )
                for p in people
            )
        )

        def complete(ix) -> bool:
            return bool(ix.original and ix.original.buttons())

        # Checked after every request the fake serves: only the oldest unanswered ones are
        # looked at (answers come about in order), so this process's own CPU, which shares the
        # 2 cores with the bot, stays small (checking all 200 each time was a quarter of it).
        waiting = collections.deque(sent)

        def all_answered() -> bool:
            while waiting and complete(waiting[0]):
                waiting.popleft()
            return not waiting

        with contextlib.suppress(AssertionError):  # counted below as unanswered
            await fake.wait_until(all_answered, timeout, "every answer")
        with contextlib.suppress(AssertionError):  # let thread creation finish
            await fake.wait_until(
                lambda: all(ix.original.thread for ix in sent if complete(ix)), 20, "threads"
            )
        # Wall time to the last complete answer (its final edit, on the same clock).
        finished = [ix.original.edits[-1].at for ix in sent if complete(ix)]
        first_sent = min(ix.created_at for ix in sent)
        acks = [ix.acknowledged_after for ix in sent if ix.acknowledged_after is not None]
        # From the command to the first edit with text in it: the first streamed words shown.
        shown = sorted(
            next(edit.at for edit in ix.original.edits if edit.content) - ix.created_at
            for ix in sent
            if ix.original and any(edit.content for edit in ix.original.edits)
        )
        say(
            {
                "users": users,
                "answered": sum(1 for ix in sent if complete(ix)),
                "correct": sum(
                    1
                    for ix, p in zip(sent, people, strict=True)
                    if ix.original and ix.original.content == f"echo: hello from {p.name}"
                ),
                "wall_s": (max(finished) - first_sent) if finished else float("nan"),
                "ack_max_s": max(acks) if acks else float("nan"),
                "threads": sum(1 for ix in sent if ix.original and ix.original.thread),
                "first_text_p50_s": statistics.median(shown) if shown else float("nan"),
                "first_text_p99_s": shown[round(0.99 * (len(shown) - 1))]
                if shown
                else float("nan"),
            }
        )
        await hear()  # stay up until the bot has closed


# -- the bot's side ---------------------------------------------------------------------------


async def core_alone(core, users: int, guild: str, pids: dict[str, int]) -> dict[str, float]:
    """The same burst through the core alone, no Discord: for each of `users` new users what
    `/chat` asks of the core (answer: find or start the conversation and reply; posted: link
    the answer and note its thread), all at once. Its wall time less the model's delay is the
    core's overhead for the burst, measured directly."""
    from assistants import Actor, Origin

    origin = Origin(frontend="bench", assistant="bench", channel_id="bench")

    async def chat(i: int) -> None:
        actor = Actor(f"alone{i}", guild)
        reply = await core.chat.answer(actor, origin, f"hello from user{i}")
        assert reply is not None and reply.text == f"echo: hello from user{i}", reply
        await core.chat.posted(reply, [f"alone-answer-{i}"], thread_id=f"alone-thread-{i}")

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(chat(i) for i in range(users)))
    wall = time.perf_counter() - started
    cpu = {f"alone_cpu_{name}_s": cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return {"alone_wall_s": wall, **cpu}


class LocalModel:
    """`fewtune serve` with the embedded model, started for the bench's home (`--real-model`);
    shaped like the fake model's process where the bench uses it (pid, terminate, wait)."""

    def __init__(self, home: Path) -> None:
        from assistants.local_server import ensure_local_server
        from storage.settings import load_settings

        self.settings = load_settings(home)
        self.pid = ensure_local_server(self.settings).pid

    def terminate(self) -> None:
        from assistants.local_server import stop_local_server

        stop_local_server(self.settings)

    def wait(self, timeout: float) -> None:
        pass


REAL_MODEL_TOML = """[chat]
default_model = "local:SmolLM2-135M-Instruct"
rate_limit_per_minute = 1000
[server]
max_batch = {max_batch}
"""


async def bench(
    users: int, delay: float, real: bool = False, max_batch: int = 8
) -> dict[str, float]:
    from assistants import Actor, Core
    from bot.discord.client import FewtuneBot
    from bot.discord.endpoints import redirect

    work = Path(tempfile.mkdtemp(prefix="fewtune-bench-"))
    home = work / "home"
    home.mkdir()
    server: subprocess.Popen | LocalModel
    if real:
        (home / "fewtune.toml").write_text(REAL_MODEL_TOML.format(max_batch=max_batch))
        server = LocalModel(home)
    else:
        server, url = start_fake_model(delay)
    driver = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--drive",
        "--users",
        str(users),
        "--timeout",
        str(600 if real else 60),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert driver.stdin is not None and driver.stdout is not None

    async def hear_driver() -> dict:
        line = await asyncio.wait_for(driver.stdout.readline(), 120)
        if not line:
            raise SystemExit("the driver process ended early")
        return json.loads(line)

    def tell(word: str) -> None:
        driver.stdin.write(f"{word}\n".encode())

    try:
        fake = await hear_driver()
        if not real:
            os.environ["FEWTUNE_BENCH_TOKEN"] = "unused"  # the fake model asks for no key
            (home / "fewtune.toml").write_text(
                f'[providers.fewtune]\nbase_url = "{url}"\napi_key_env = "FEWTUNE_BENCH_TOKEN"\n'
                f'max_retries = 0\n[chat]\ndefault_model = "fewtune:echo"\n'
                f"rate_limit_per_minute = 1000\n"
            )
        core = Core.open(home)
        actor = Actor(fake["owner"], fake["guild"])
        await asyncio.to_thread(
            core.assistants.create, actor, "bench", "Answer.", max_tokens=128 if real else None
        )
        examples = "\n".join(
            json.dumps({"input": f"question {i}", "output": f"answer {i}"}) for i in range(20)
        )
        await asyncio.to_thread(
            core.examples.import_data, actor, "bench", "e.jsonl", examples.encode()
        )
        # The core's own time per message (store, embed, select, build, record), from its Reply.
        overheads: list[float] = []
        answer = core.chat.answer

        async def measured_answer(*args, **kwargs):
            reply = await answer(*args, **kwargs)
            if reply is not None:
                overheads.append(reply.overhead_ms)
            return reply

        core.chat.answer = measured_answer  # type: ignore[method-assign]
        redirect(fake["api_base"], fake["gateway"])
        bot = FewtuneBot(core, stream_interval=1.0, guild_ready_timeout=0.05)
        runner = asyncio.create_task(bot.start(fake["token"]))
        while not bot.is_ready():
            if runner.done():
                runner.result()
            await asyncio.sleep(0.05)
        tell("ready")
        await hear_driver()  # warmed up
        gc.freeze()  # as `run_bot` does once started (see bot/discord/__init__.py)
        overheads.clear()
        monitor = LagMonitor()
        monitor.start()
        await asyncio.sleep(0.2)
        pids = {"bot": os.getpid(), "discord": driver.pid, "model": server.pid}
        pids["calls"] = core.providers.calls_pid or 0  # the core's model calls' own process
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        core_before, models_before = thread_cpu(CORE_THREADS), thread_cpu(MODEL_THREADS)
        started = time.perf_counter()
        tell("go")
        result = await hear_driver()
        monitor.stop()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["core"] = thread_cpu(CORE_THREADS) - core_before
        cpu["models"] = thread_cpu(MODEL_THREADS) - models_before
        await bot.close()
        await asyncio.wait_for(runner, 10)
        tell("bye")
        # The core alone on the same burst, from the same cold start: fresh model clients
        # (their pool then holds one connection, as the Discord burst's warm-up left it).
        core.chat.answer = answer  # type: ignore[method-assign]  # stop measuring per message
        alone: dict[str, float] = {}
        if not real:  # its check and its goal are the echo model's
            await core.providers.close()
            await core.chat.ask(actor, "bench", "warm up")
            gc.collect()
            alone = await core_alone(
                core,
                users,
                fake["guild"],
                {"bot": os.getpid(), "model": server.pid, "calls": core.providers.calls_pid or 0},
            )
        await asyncio.get_running_loop().shutdown_default_executor()  # see bot/discord serve()
        await core.providers.close()
        core.close()
        lags = sorted(monitor.lags)
        worst = sorted(zip(monitor.lags, monitor.at, strict=True), reverse=True)[:5]
        print(
            "worst lags (ms @ s after start):",
            [(round(1000 * lag), round(at - started, 2)) for lag, at in worst],
        )
        overheads.sort()
        result.update(
            {
                "model_delay_s": delay,
                "overhead_s": result["wall_s"] - delay,
                "core_overhead_ms_median": statistics.median(overheads) if overheads else 0.0,
                "core_overhead_ms_p95": overheads[int(0.95 * (len(overheads) - 1))]
                if overheads
                else 0.0,
                "core_overhead_ms_max": overheads[-1] if overheads else 0.0,
                "lag_max_ms": 1000 * lags[-1] if lags else 0.0,
                "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
                "lag_median_ms": 1000 * statistics.median(lags) if lags else 0.0,
                "failed": users - result["answered"],
                **alone,
                **{f"cpu_{name}_s": seconds for name, seconds in cpu.items()},
            }
        )
        return result
    finally:
        if driver.returncode is None:
            driver.kill()
        await driver.wait()
        server.terminate()
        server.wait(timeout=10)


def report(result: dict[str, float]) -> None:
    """One run's figures."""
    print(f"users:            {result['users']} (unanswered: {result['failed']})")
    print(
        f"answered:         {result['answered']} (correct text: {result['correct']}, "
        f"threads opened: {result['threads']})"
    )
    goal = 1.5 + result["core_total_s"]
    print(
        f"wall time:        {result['wall_s']:.2f} s (model delay {result['model_delay_s']} s, "
        f"overhead {result['overhead_s']:.2f} s; goal < 1.5 s + the core's CPU for the burst, "
        f"its model calls included, {result['core_total_s']:.2f} s = {goal:.2f} s: "
        f"{met(result['wall_s'] < goal)}; without the model calls {met(result['wall_s'] < 1.5 + result['cpu_core_s'])})"
    )
    alone = result["alone_wall_s"]
    print(
        f"core alone:       {alone:.2f} s for the same {result['users']} messages without Discord "
        f"(overhead {alone - result['model_delay_s']:.2f} s; CPU: bot "
        f"{result['alone_cpu_bot_s']:.2f} s, its model calls' process "
        f"{result['alone_cpu_calls_s']:.2f} s, model server {result['alone_cpu_model_s']:.2f} s)"
    )
    print(
        f"Discord's share:  {result['share_s']:.2f} s = wall time - core alone (goal read this "
        f"way: < 0.5 s: {met(result['share_s'] < 0.5)})"
    )
    print(
        f"core overhead:    median {result['core_overhead_ms_median']:.0f} ms, "
        f"p95 {result['core_overhead_ms_p95']:.0f} ms, max {result['core_overhead_ms_max']:.0f} ms "
        "per message"
    )
    print(
        f"CPU in the burst: bot {result['cpu_bot_s']:.2f} s (core work {result['cpu_core_s']:.2f} "
        f"s, its model calls {result['cpu_models_s']:.2f} s in the bot and "
        f"{result['cpu_calls_s']:.2f} s in their own process), fake Discord and its users {result['cpu_discord_s']:.2f} s, model server "
        f"{result['cpu_model_s']:.2f} s (on {os.cpu_count()} cores)"
    )
    print(f"slowest ack:      {result['ack_max_s']:.2f} s (Discord requires < 3 s)")
    print(
        f"event loop lag:   max {result['lag_max_ms']:.1f} ms, p99 {result['lag_p99_ms']:.1f} ms, "
        f"median {result['lag_median_ms']:.2f} ms (goal: max <= 50 ms)"
    )


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summary(results: list[dict[str, float]]) -> None:
    """Every goal over the runs: how often met, and the median figures (this machine's speed
    drifts from run to run, so one run alone says little)."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    runs = len(results)
    answered = sum(1 for r in results if r["failed"] == 0)
    cpu_goal = sum(1 for r in results if r["wall_s"] < 1.5 + r["core_total_s"])
    old_goal = sum(1 for r in results if r["wall_s"] < 1.5 + r["cpu_core_s"])
    share_goal = sum(1 for r in results if r["share_s"] < 0.5)
    lag_goal = sum(1 for r in results if r["lag_max_ms"] <= 50)
    print(f"\n== {runs} runs ==")
    print(f"all answered:     {answered}/{runs} runs")
    print(
        f"wall time:        median {median('wall_s'):.2f} s; core alone median "
        f"{median('alone_wall_s'):.2f} s; core CPU median {median('core_total_s'):.2f} s "
        f"({median('cpu_core_s'):.2f} s without the model calls)"
    )
    print(
        f"Discord's share:  median {median('share_s'):.2f} s; goal < 0.5 s met in "
        f"{share_goal}/{runs} runs"
    )
    print(
        f"wall < 1.5 s + core CPU: met in {cpu_goal}/{runs} runs (median margin "
        f"{statistics.median(1.5 + r['core_total_s'] - r['wall_s'] for r in results):+.2f} s); "
        f"without the model calls in it: met in {old_goal}/{runs} (median margin "
        f"{statistics.median(1.5 + r['cpu_core_s'] - r['wall_s'] for r in results):+.2f} s)"
    )
    print(
        f"loop lag max:     median {median('lag_max_ms'):.1f} ms, worst "
        f"{max(r['lag_max_ms'] for r in results):.1f} ms; <= 50 ms in {lag_goal}/{runs} runs"
    )
    print(f"slowest ack:      worst {max(r['ack_max_s'] for r in results):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="fresh runs, then the medians")
    parser.add_argument("--real-model", action="store_true", help="the embedded SmolLM2")
    parser.add_argument("--max-batch", type=int, default=8, help="with --real-model")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        asyncio.run(drive(args.users, args.timeout))
        return
    if args.real_model:
        for _ in range(args.runs):
            result = asyncio.run(bench(args.users, 0.0, real=True, max_batch=args.max_batch))
            print(
                f"max_batch {args.max_batch}, users {result['users']}: answered {result['answered']}, threads "
                f"{result['threads']}; first streamed text after p50 "
                f"{result['first_text_p50_s']:.2f} s, p99 {result['first_text_p99_s']:.2f} s; "
                f"last answer complete after {result['wall_s']:.2f} s; slowest ack "
                f"{result['ack_max_s']:.2f} s; event loop lag max {result['lag_max_ms']:.1f} ms"
            )
        return
    results = []
    for run in range(args.runs):
        result = asyncio.run(bench(args.users, args.delay))
        result["share_s"] = result["wall_s"] - result["alone_wall_s"]
        result["core_total_s"] = (
            result["cpu_core_s"] + result["cpu_models_s"] + result["cpu_calls_s"]
        )
        print(f"\n-- run {run + 1} of {args.runs} --")
        report(result)
        results.append(result)
    summary(results)


if __name__ == "__main__":
    main()
