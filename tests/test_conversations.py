"""Conversations as frontends find them: by thread, channel, bound channel, reply chain; and
the core used from many threads at once (as the Discord bot does)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from assistants import Actor, NotFound, PermissionDenied
from assistants.transfer import export_assistant, import_assistant

OWNER = Actor("owner", "g1")
ADMIN = Actor("admin", "g1", can_manage_guild=True)
MEMBER = Actor("member", "g1")


@pytest.fixture
def team(core):
    assistant = core.assistants.create(OWNER, "team", "Answer.", visibility="guild", k=1)
    core.examples.add(OWNER, "team", "hello", "hi there")
    return assistant


def reply(core, actor, conversation, text, external_ids=()):
    prepared = core.chat.prepare(actor, conversation.id, text)
    message_id = core.chat.record(prepared, actor, {"content": f"re: {text}"})
    core.chat.link(message_id, list(external_ids))
    return message_id


def test_start_for_an_assistant_by_id_checks_visibility(core, team):
    conversation = core.chat.start_for(MEMBER, team.id, channel_id="c1", frontend="discord")
    assert conversation.assistant_id == team.id and conversation.channel_id == "c1"
    with pytest.raises(NotFound):
        core.chat.start_for(Actor("stranger", "g2"), team.id)


def test_every_part_of_a_split_reply_continues_the_conversation(core, team):
    conversation = core.chat.start(MEMBER, "team", channel_id="c1")
    core.chat.prepare(MEMBER, conversation.id, "first", external_id="m-user")
    reply(core, MEMBER, conversation, "second", external_ids=["m-part1", "m-part2"])
    for external_id in ("m-user", "m-part1", "m-part2"):
        assert core.chat.conversation_for_message(external_id).id == conversation.id
    assert core.chat.conversation_for_message("unknown") is None


def test_the_latest_conversation_in_a_channel_is_found_per_user(core, team):
    first = core.chat.start(MEMBER, "team", channel_id="dm-1")
    latest = core.chat.start(MEMBER, "team", channel_id="dm-1")
    core.chat.start(ADMIN, "team", channel_id="dm-1")
    found = core.chat.conversation_for_channel("dm-1", team.id, user_id="member")
    assert found.id == latest.id != first.id
    assert core.chat.conversation_for_channel("dm-2", team.id) is None


def test_binding_a_guild_channel_needs_manage_server(core, team):
    with pytest.raises(PermissionDenied):
        core.chat.bind(MEMBER, "c1", "team")
    assert core.chat.bind(ADMIN, "c1", "team").id == team.id
    assert core.chat.bound("c1").id == team.id
    with pytest.raises(PermissionDenied):
        core.chat.bind(OWNER, "c1", None)
    core.chat.bind(ADMIN, "c1", "none")
    assert core.chat.bound("c1") is None
    # A DM channel is the user's own.
    core.assistants.create(Actor("solo"), "mine", "Answer.")
    assert core.chat.bind(Actor("solo"), "dm-9", "mine").name == "mine"


def test_forget_removes_external_links_with_the_messages(core, team):
    conversation = core.chat.start(MEMBER, "team")
    reply(core, MEMBER, conversation, "hi", external_ids=["x1"])
    assert core.privacy.forget("member") == 1
    assert core.chat.conversation_for_message("x1") is None
    assert core.db.execute("SELECT count(*) FROM external_ids").fetchone()[0] == 0


def test_an_assistant_round_trips_through_export_and_import(core, team):
    bundle = export_assistant(core, OWNER, "team")
    assert bundle["assistant"]["instructions"] == "Answer." and len(bundle["examples"]) == 1
    data = json.dumps(bundle).encode()
    copy, result = import_assistant(core, Actor("other"), data, name="team-copy")
    assert copy.owner_id == "other" and result.added == 1
    with pytest.raises(PermissionDenied):
        export_assistant(core, MEMBER, "team")


def test_a_bad_bundle_creates_nothing(core):
    bundle = {
        "format": "fewtune-assistant",
        "version": 1,
        "assistant": {"name": "broken", "instructions": "x"},
        "examples": [{"input": "only input"}],
    }
    with pytest.raises(Exception, match="Line 1"):
        import_assistant(core, OWNER, json.dumps(bundle).encode())
    with pytest.raises(NotFound):
        core.assistants.get(OWNER, "broken")


def test_many_threads_chat_at_once_without_losing_a_message(core, team):
    """The bot runs core calls in threads; each gets its own SQLite connection."""

    def one(i: int) -> int:
        user = Actor(f"user{i}", "g1")
        conversation = core.chat.start(user, "team", channel_id=f"c{i}")
        return reply(core, user, conversation, f"hello {i}", external_ids=[f"m{i}"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(one, range(64)))
    assert len(set(ids)) == 64
    assert core.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 128
    assert all(core.chat.conversation_for_message(f"m{i}") for i in range(64))
