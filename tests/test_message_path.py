"""One message's way through the core from its Origin: which conversation it continues (each
rule of `Chat.resolve`, on a real core), the whole answer in one call, what the frontend posted
linked in one more, and the model transports behind the providers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from assistants import Actor, Core, InvalidInput, LimitExceeded, NoAssistant, NotFound, Origin
from assistants.chat import Opening
from assistants.ratelimit import UserRateLimiter
from storage.settings import SettingsError, load_settings

OWNER = Actor("owner", "g1")
MEMBER = Actor("member", "g1")
DISCORD = {"frontend": "discord"}


def open_core(home, embedder, port: int, transport: str = "process") -> Core:
    (home / "fewtune.toml").write_text(
        f'[providers.echo]\nbase_url = "http://127.0.0.1:{port}/v1"\nmax_retries = 0\n'
        f'timeout = 5\n[chat]\nmodel_transport = "{transport}"\n',
        encoding="utf-8",
    )
    return Core.open(home, embedder=embedder)


@pytest.fixture
def team(core):
    return core.assistants.create(OWNER, "team", "Answer.", visibility="guild", k=0)


@pytest.fixture
def talking(fewtune_home, embedder, model):
    """A core whose guild assistant `team` answers through the fake model (it echoes)."""
    core = open_core(fewtune_home, embedder, model.port)
    core.assistants.create(OWNER, "team", "Answer.", visibility="guild", model="echo:m", k=0)
    yield core
    asyncio.run(core.providers.close())
    core.close()


def said(core, actor, conversation, text: str, external_id: str) -> None:
    """A message and its answer stored in `conversation`, the answer linked as `external_id`."""
    prepared = core.chat.prepare(actor, conversation.id, text)
    answer = core.chat.record(prepared, actor, {"content": f"re: {text}"})
    core.chat.link(answer, [external_id])


# -- which conversation: each rule ---------------------------------------------------------------


def test_a_named_conversation_goes_on(core, team):
    started = core.chat.start(MEMBER, "team")
    assert core.chat.resolve(MEMBER, Origin(conversation_id=started.id)) == started


def test_a_named_assistant_opens_a_conversation_in_the_channel(core, team):
    opening = core.chat.resolve(MEMBER, Origin(assistant="team", channel_id="c1", **DISCORD))
    assert opening == Opening(team, "c1", None, "discord")


def test_a_named_assistant_in_its_thread_goes_on_and_in_a_thread_keeps_the_parent(core, team):
    current = core.chat.start(MEMBER, "team", channel_id="c1", thread_id="t1")
    in_thread = Origin(assistant="team", channel_id="t1", thread_id="t1", parent_id="c1")
    assert core.chat.resolve(MEMBER, in_thread) == current
    core.assistants.create(OWNER, "other", "Answer.", visibility="guild", k=0)
    other = core.chat.resolve(MEMBER, Origin(**{**in_thread.__dict__, "assistant": "other"}))
    assert isinstance(other, Opening) and (other.channel_id, other.thread_id) == ("c1", "t1")


def test_a_reply_continues_the_conversation_of_what_it_replies_to(core, team):
    conversation = core.chat.start(MEMBER, "team", channel_id="c1")
    said(core, MEMBER, conversation, "first", "answer-1")
    origin = Origin(channel_id="c1", addressed=False, replies_to="answer-1", **DISCORD)
    assert core.chat.resolve(MEMBER, origin).id == conversation.id


def test_a_reply_to_an_answer_not_linked_yet_is_found_through_what_it_answered(core, team):
    conversation = core.chat.start(MEMBER, "team", channel_id="c1")
    core.chat.prepare(MEMBER, conversation.id, "first", external_id="interaction:9")
    origin = Origin(
        channel_id="c1", addressed=False, replies_to="unlinked", answer_to="interaction:9"
    )
    assert core.chat.resolve(MEMBER, origin).id == conversation.id


def test_a_dm_goes_on_with_the_last_used_assistant(core, team):
    with pytest.raises(NoAssistant) as refused:
        core.chat.resolve(MEMBER, Origin(channel_id="dm1", dm=True, addressed=False))
    assert refused.value.dm
    core.chat.prepare(MEMBER, core.chat.start(MEMBER, "team").id, "elsewhere")  # now last used
    dm = Origin(channel_id="dm1", dm=True, addressed=False, **DISCORD)
    opening = core.chat.resolve(MEMBER, dm)
    assert opening == Opening(team, "dm1", None, "discord")
    current = core.chat.start(MEMBER, "team", channel_id="dm1")
    assert core.chat.resolve(MEMBER, dm) == current


def test_a_thread_opened_on_an_answer_is_followed_even_before_its_id_is_stored(core, team):
    conversation = core.chat.start(MEMBER, "team", channel_id="c1")
    said(core, MEMBER, conversation, "first", "answer-1")  # the thread's id is the answer's
    origin = Origin(channel_id="answer-1", thread_id="answer-1", parent_id="c1", addressed=False)
    assert core.chat.resolve(MEMBER, origin).id == conversation.id
    core.chat.set_thread(conversation.id, "t2")
    origin = Origin(channel_id="t2", thread_id="t2", parent_id="c1", addressed=False)
    assert core.chat.resolve(MEMBER, origin).id == conversation.id


def test_elsewhere_only_an_addressed_message_is_answered_by_the_bound_assistant(core, team):
    assert core.chat.resolve(MEMBER, Origin(channel_id="c1", addressed=False)) is None
    with pytest.raises(NoAssistant) as refused:
        core.chat.resolve(MEMBER, Origin(channel_id="c1"))
    assert not refused.value.dm
    core.chat.bind(Actor("admin", "g1", can_manage_guild=True), "c1", "team")
    assert core.chat.resolve(MEMBER, Origin(channel_id="c1", **DISCORD)) == Opening(
        team, "c1", None, "discord"
    )
    in_thread = Origin(channel_id="t9", thread_id="t9", parent_id="c1", **DISCORD)
    assert core.chat.resolve(MEMBER, in_thread) == Opening(team, "t9", "t9", "discord")
    with pytest.raises(NotFound):  # bound in another guild's channel: not visible here
        core.chat.resolve(Actor("stranger", "g2"), Origin(channel_id="c1"))


# -- the whole answer in one call, the posted ids in one more ------------------------------------


async def test_one_call_answers_and_one_more_links_every_part_and_the_thread(talking, model):
    chat = talking.chat
    shown: list[str] = []

    async def on_delta(text: str) -> None:
        shown.append(text)

    origin = Origin(assistant="team", channel_id="c1", external_id="interaction:1", **DISCORD)
    reply = await chat.answer(MEMBER, origin, "hello", on_delta=on_delta)
    assert reply is not None and reply.text == "echo: hello" and reply.error is None
    assert shown[-1] == "echo: hello"
    # The fake counts words: the instructions "Answer." and the message "hello".
    assert (reply.prompt_tokens, reply.completion_tokens) == (2, 2)
    assert model.history[-1]["messages"][-1] == {"role": "user", "content": "hello"}
    conversation = chat.conversation(reply.conversation_id)
    assert (conversation.channel_id, conversation.frontend) == ("c1", "discord")
    assert chat.conversation_for_message("interaction:1").id == conversation.id

    await chat.posted(reply, ["part-1", "part-2"], thread_id="t1")
    for part in ("part-1", "part-2"):
        assert chat.conversation_for_message(part).id == conversation.id
    assert chat.conversation_for_thread("t1").id == conversation.id
    follow = Origin(channel_id="t1", thread_id="t1", parent_id="c1", addressed=False)
    again = await chat.answer(MEMBER, follow, "and again?")
    assert again is not None and again.conversation_id == conversation.id


async def test_a_message_not_for_fewtune_costs_nothing(talking, model):
    limiter = UserRateLimiter(1)
    for origin, text in ((Origin(channel_id="c1", addressed=False), "chatting"),) * 3:
        assert await talking.chat.answer(MEMBER, origin, text, limiter=limiter) is None
    assert model.history == []
    assert talking.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    # The limit counts answered messages only: the first one passes, the second waits.
    named = Origin(assistant="team")
    assert await talking.chat.answer(MEMBER, named, "one", limiter=limiter) is not None
    with pytest.raises(LimitExceeded, match="sending messages quickly"):
        await talking.chat.answer(MEMBER, named, "two", limiter=limiter)
    assert talking.db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 1


async def test_a_refused_message_leaves_no_conversation_behind(talking):
    with pytest.raises(InvalidInput, match="characters; the limit is"):
        await talking.chat.answer(MEMBER, Origin(assistant="team"), "x" * 20_000)
    assert talking.db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 0


# -- the model transports ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["process", "inline"])
async def test_both_transports_stream_the_same_reply(fewtune_home, embedder, model, transport):
    core = open_core(fewtune_home, embedder, model.port, transport)
    core.assistants.create(OWNER, "team", "Answer.", model="echo:m", k=0)
    try:
        reply = await core.chat.ask(OWNER, "team", "hello")
        assert reply.text == "echo: hello" and reply.completion_tokens == 2
        assert (core.providers.calls_pid is not None) == (transport == "process")
    finally:
        await core.providers.close()
        core.close()


@pytest.mark.parametrize("transport", ["process", "inline"])
async def test_both_transports_say_a_provider_is_down_in_one_sentence(
    fewtune_home, embedder, transport
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    core = open_core(fewtune_home, embedder, port, transport)
    core.assistants.create(OWNER, "team", "Answer.", model="echo:m", k=0)
    try:
        reply = await core.chat.answer(OWNER, Origin(assistant="team"), "hello")
        assert reply is not None and reply.error == (
            "Could not reach provider 'echo'; check that it is running and try again."
        )
        stored = core.db.execute("SELECT status FROM messages WHERE id = ?", [reply.message_id])
        assert stored.fetchone()[0] == "error"
    finally:
        await core.providers.close()
        core.close()


def test_an_unknown_transport_is_one_sentence(fewtune_home):
    (fewtune_home / "fewtune.toml").write_text('[chat]\nmodel_transport = "pigeon"\n')
    with pytest.raises(SettingsError, match="model_transport must be one of process, inline"):
        load_settings(fewtune_home)
