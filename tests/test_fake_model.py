"""The tests' one fake model (tests/fake_model.py) through the real openai client."""

from __future__ import annotations

import threading
import time

import openai
import pytest
from fake_model import FakeModel

HI = [{"role": "user", "content": "say hi"}]


@pytest.fixture
def fake():
    with FakeModel() as model:
        yield model


def client_of(model: FakeModel) -> openai.OpenAI:
    return openai.OpenAI(base_url=model.base_url, api_key="unused", max_retries=0, timeout=10)


def test_echoes_by_default_and_records_what_it_was_sent(fake: FakeModel) -> None:
    reply = client_of(fake).chat.completions.create(model="any", messages=HI)
    assert reply.choices[0].message.content == "echo: say hi"
    assert reply.model == "any" and reply.usage is not None and reply.usage.completion_tokens == 3
    assert fake.history == [{"model": "any", "messages": HI}]


def test_queued_chunks_stream_as_given_then_the_echo_again(fake: FakeModel) -> None:
    fake.enqueue(["Hel", "lo", "!"])
    stream = client_of(fake).chat.completions.create(
        model="m", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks if c.choices][:3] == ["Hel", "lo", "!"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert fake.history[0]["stream"] is True
    again = client_of(fake).chat.completions.create(model="m", messages=HI)
    assert again.choices[0].message.content == "echo: say hi"


def test_an_error_on_demand_reaches_the_client(fake: FakeModel) -> None:
    fake.enqueue(status=503, error="Overloaded.")
    with pytest.raises(openai.APIStatusError) as caught:
        client_of(fake).chat.completions.create(model="m", messages=HI)
    assert caught.value.status_code == 503 and "Overloaded." in str(caught.value)


def test_a_fixed_reply_after_a_delay_and_a_held_answer(fake: FakeModel) -> None:
    fake.reply, fake.delay = "fixed", 0.3
    started = time.monotonic()
    reply = client_of(fake).chat.completions.create(model="m", messages=HI)
    assert reply.choices[0].message.content == "fixed"
    assert time.monotonic() - started >= 0.3
    fake.delay = 0.0
    release = threading.Event()
    fake.enqueue(["late"], hold=release)
    answers: list[str | None] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            client_of(fake)
            .chat.completions.create(model="m", messages=HI)
            .choices[0]
            .message.content
        )
    )
    asking.start()
    asking.join(0.5)
    assert asking.is_alive() and answers == []  # held: no answer yet
    release.set()
    asking.join(10)
    assert answers == ["late"]


def test_stopped_it_refuses_connections(fake: FakeModel) -> None:
    fake.stop()
    with pytest.raises(openai.APIConnectionError):
        client_of(fake).chat.completions.create(model="m", messages=HI)
