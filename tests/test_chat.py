"""One message end to end: the core and the CLI through the real openai client to a real
`fewtune serve` (started on demand by the `local` provider) running a tiny model."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from fake_model import FakeModel
from server_fixtures import make_tiny_model

from assistants import TERMINAL, Core, ProviderError
from assistants.local_server import stop_local_server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def local_core(fewtune_home, tiny_model, embedder):
    """A core whose `local` provider runs the tiny model; the server is stopped afterwards."""
    (fewtune_home / "fewtune.toml").write_text(
        f'[server]\nmodel = "{tiny_model}"\nidle_timeout = 0\nstart_timeout = 180\n'
        '[chat]\ndefault_model = "local:tiny"\n',
        encoding="utf-8",
    )
    core = Core.open(fewtune_home, embedder=embedder)
    core.assistants.create(TERMINAL, "helper", "Answer with the number in digits.", k=2)
    core.examples.import_data(
        TERMINAL,
        "helper",
        "ex.jsonl",
        b'{"input": "two", "output": "2"}\n{"input": "three", "output": "3"}\n'
        b'{"input": "forty", "output": "40"}\n',
    )
    yield core
    stop_local_server(core.settings)
    core.close()


def test_ask_json_replies_through_the_local_server_and_records_everything(local_core, cli):
    result = cli("ask", "helper", "three", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data["reply"], str)
    assert data["model"] == "local:tiny"
    assert [e["input"] for e in data["examples"]][-1] in {"two", "three", "forty"}
    assert {"id", "input", "output"} <= set(data["examples"][0])
    assert data["examples"][0]["input"] == "three"  # the most similar example ranks first
    rows = list(local_core.db.query("SELECT * FROM messages ORDER BY id"))
    assert [r["role"] for r in rows] == ["user", "assistant"]
    reply = rows[1]
    assert reply["model"] == "local:tiny"
    assert [e["id"] for e in json.loads(reply["examples_used"])] == [
        e["id"] for e in data["examples"]
    ]
    assert reply["prompt_tokens"] > 0 and reply["completion_tokens"] >= 1
    assert reply["latency_ms"] > 0


async def test_reply_streams_and_keeps_the_conversation(local_core):
    conversation = local_core.chat.start(TERMINAL, "helper")
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)

    first = await local_core.chat.reply(TERMINAL, conversation.id, "forty", on_delta=on_delta)
    assert seen and all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
    assert seen[-1].strip() == first.text
    second = local_core.chat.prepare(TERMINAL, conversation.id, "and two?")
    tail = second.messages[-3:]
    assert [m["role"] for m in tail] == ["user", "assistant", "user"]
    assert [m["content"] for m in tail] == ["forty", first.text, "and two?"]
    await local_core.providers.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def core_with_provider(home, embedder, name: str, base_url: str, settings: str):
    """A Core whose assistant `helper` talks to provider `name` at `base_url`."""
    (home / "fewtune.toml").write_text(
        f'[providers.{name}]\nbase_url = "{base_url}"\n{settings}', encoding="utf-8"
    )
    core = Core.open(home, embedder=embedder)
    core.assistants.create(TERMINAL, "helper", "Answer.", model=f"{name}:any", k=0)
    return core


def closed_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


def test_a_provider_that_is_down_gets_one_clear_line_and_the_message_is_kept(
    fewtune_home, embedder, cli
):
    settings = "max_retries = 1\ntimeout = 5\n"
    core = core_with_provider(fewtune_home, embedder, "down", closed_url(), settings)
    result = cli("ask", "helper", "hello")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Could not reach provider 'down'; check that it is running and try again."
    ]
    rows = list(core.db.query("SELECT role, status, content FROM messages ORDER BY id"))
    assert rows[0] == {"role": "user", "status": "ok", "content": "hello"}
    assert rows[1]["status"] == "error"

    async def ask_again() -> None:
        try:
            await core.chat.ask(TERMINAL, "helper", "again")
        finally:
            await core.providers.close()

    with pytest.raises(ProviderError):
        import asyncio

        asyncio.run(ask_again())
    core.close()


def test_a_provider_that_never_answers_times_out_with_one_clear_line(fewtune_home, embedder, cli):
    """A server that accepts the connection and then says nothing: the timeout bounds the wait."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        settings = "max_retries = 0\ntimeout = 0.5\n"
        url = f"http://127.0.0.1:{port}/v1"
        core = core_with_provider(fewtune_home, embedder, "mute", url, settings)
        result = cli("ask", "helper", "hello")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: The model mute:any did not answer in time; try again in a moment."
    ]
    core.close()


def test_chat_in_the_terminal_streams_and_shows_the_examples(local_core, cli):
    assert local_core.providers.starting_note("local:tiny") is not None  # no server yet
    result = cli("chat", "helper", input="/help\ntwo\n/new\nthree\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("helper> ") == 2
    assert "[examples: #" in result.stdout
    # Once under each reply, never again as the next message's note.
    assert result.stdout.count("[examples: ") == 2
    assert "(new conversation)" in result.stdout
    # The wait for the local server is said once, before the first reply; a command the chat
    # does not know is explained, not sent to the model.
    assert result.stdout.count("Starting the local model server") == 1
    assert result.stdout.index("Starting the local model server") < result.stdout.index("helper> ")
    assert "/help: /new starts over" in result.stdout
    conversations = local_core.db.execute("SELECT count(*) FROM conversations").fetchone()[0]
    assert conversations == 2
    assert local_core.providers.starting_note("local:tiny") is None  # it runs now
    assert local_core.providers.starting_note("openai:gpt-4o-mini") is None


@pytest.mark.slow
def test_promote_wait_evaluates_switches_downloads_and_rolls_back(local_core, cli, tmp_path):
    for i in range(12):
        local_core.examples.add(TERMINAL, "helper", f"number {i} please", str(i))
    result = cli("promote", "helper", "--wait", "--force", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "Evaluation on" in result.stdout and "few-shot" in result.stdout
    assert "switched: yes" in result.stdout  # --force switches whatever the scores
    assistant = local_core.assistants.get(TERMINAL, "helper")
    assert assistant.fine_tuned_model and assistant.fine_tuned_model.startswith("local:ft:tiny:")
    promotion = local_core.promotions.latest(TERMINAL, "helper")
    assert promotion.status == "succeeded" and promotion.evaluation["items"] >= 1
    # The assistant now answers with its fine-tuned model.
    asked = cli("ask", "helper", "two", "--json")
    assert json.loads(asked.stdout)["model"] == assistant.fine_tuned_model
    status = cli("promote", "status", "helper")
    assert "succeeded" in status.stdout
    target = tmp_path / "adapter"
    downloaded = cli("adapter", "download", "helper", str(target))
    assert downloaded.exit_code == 0, downloaded.output
    assert (target / "adapter_config.json").is_file()
    assert (target / "adapter_model.safetensors").is_file()
    back = cli("rollback", "helper")
    assert back.exit_code == 0 and "local:tiny" in back.stdout
    assert local_core.assistants.get(TERMINAL, "helper").fine_tuned_model is None


async def test_a_stopped_local_server_is_started_again_for_the_next_message(local_core):
    first = await local_core.chat.ask(TERMINAL, "helper", "two")
    assert stop_local_server(local_core.settings)  # as an idle timeout would
    second = await local_core.chat.ask(TERMINAL, "helper", "three")
    assert second.model == first.model == "local:tiny"
    await local_core.providers.close()


def test_a_provider_streaming_something_else_than_chat_chunks_gets_one_clear_line(
    fewtune_home, embedder, cli
):
    """An endpoint that answers 200 with server-sent events that are not chat chunks."""
    with FakeModel() as model:
        model.enqueue(raw=b'data: ["not", "a", "chunk"]\n\ndata: [DONE]\n\n')
        settings = "max_retries = 0\ntimeout = 5\n"
        core = core_with_provider(fewtune_home, embedder, "odd", model.base_url, settings)
        result = cli("ask", "helper", "hello")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: The provider 'odd' sent a chunk that is not an OpenAI chat chunk."
    ]
    core.close()


async def test_when_the_model_calls_process_dies_the_chat_says_so_and_the_next_one_works(
    fewtune_home, embedder
):
    """The model calls run in a process of their own (assistants/model_worker.py): killed while
    a reply streams, that reply fails in one sentence and the next message starts a new one."""
    import asyncio
    import os
    import signal

    release = threading.Event()
    model = FakeModel().start()
    model.enqueue(hold=release)  # the first reply never comes while the test runs
    model.enqueue(["hello"])
    settings = "max_retries = 0\n"
    core = core_with_provider(fewtune_home, embedder, "slow", model.base_url, settings)
    try:
        first = asyncio.create_task(core.chat.ask(TERMINAL, "helper", "one"))
        while not model.history:
            await asyncio.sleep(0.05)
        pid = core.providers.calls_pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ProviderError, match="process stopped unexpectedly"):
            await asyncio.wait_for(first, 20)
        second = await asyncio.wait_for(core.chat.ask(TERMINAL, "helper", "two"), 60)
        assert second.text == "hello"
        assert core.providers.calls_pid not in (None, pid)
    finally:
        release.set()
        model.stop()
        await core.providers.close()
        core.close()


async def test_the_model_calls_process_starts_once_on_warm_up_and_stops_on_close(
    fewtune_home, embedder
):
    import asyncio
    import os

    core = core_with_provider(fewtune_home, embedder, "any", closed_url(), "")
    try:
        assert core.providers.calls_pid is None, "started on demand, not with the core"
        await asyncio.gather(core.providers.warm_up(), core.providers.warm_up())
        pid = core.providers.calls_pid
        assert pid is not None
        os.kill(pid, 0)  # running
        await core.providers.warm_up()
        assert core.providers.calls_pid == pid, "one process"
    finally:
        await core.providers.close()
        core.close()
    assert core.providers.calls_pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
