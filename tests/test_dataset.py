"""Promotion datasets from examples and collected conversations: every filter rule and the split."""

from __future__ import annotations

import json

from assistants import Actor
from assistants.chat import Prepared
from assistants.dataset import build_dataset, is_held_out

OWNER = Actor("owner")


def converse(core, actor, name, turns, status="ok"):
    """Store a conversation's turns through the core's own prepare/record path (no model)."""
    conversation = core.chat.start(actor, name)
    ids = []
    for user_text, reply_text in turns:
        prepared: Prepared = core.chat.prepare(actor, conversation.id, user_text)
        ids.append(core.chat.record(prepared, actor, {"content": reply_text, "status": status}))
    return conversation, ids


def make(core, k=0):
    return core.assistants.create(OWNER, "helper", "Answer briefly.", k=k, visibility="public")


def test_examples_and_conversations_become_chats_with_the_instructions(core):
    assistant = make(core)
    core.examples.add(OWNER, "helper", "two", "2")
    converse(core, OWNER, "helper", [("three", "3"), ("and four?", "4")])
    data = build_dataset(core.db, assistant.id, assistant.instructions, held_out_fraction=0)
    assert data.stats["examples"] == 1 and data.stats["conversations"] == 1
    chats = [c["messages"] for c in data.train]
    assert chats[0] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "2"},
    ]
    assert [m["content"] for m in chats[1]] == ["Answer briefly.", "three", "3", "and four?", "4"]
    # Every line is valid OpenAI chat JSONL.
    for line in data.jsonl().splitlines():
        assert set(json.loads(line)) == {"messages"}


def test_opted_out_users_are_left_out(core):
    assistant = make(core)
    alice, bob = Actor("alice"), Actor("bob")
    converse(core, alice, "helper", [("hi", "hello")])
    converse(core, bob, "helper", [("yo", "hey")])
    core.privacy.opt_out("bob")
    data = build_dataset(core.db, assistant.id, assistant.instructions, held_out_fraction=0)
    texts = [m["content"] for c in data.train for m in c["messages"]]
    assert "hi" in texts and "yo" not in texts
    assert data.stats["filters"]["opted_out"] == 1


def test_thumbs_down_is_replaced_by_its_correction_or_not_learned(core):
    assistant = make(core)
    user = Actor("u")
    _, (corrected,) = converse(core, user, "helper", [("capital of France?", "Berlin")])
    _, (disliked,) = converse(core, user, "helper", [("2+2?", "5")])
    core.feedback.rate(user, corrected, -1)
    core.feedback.improve(user, corrected, "Paris")
    core.feedback.rate(user, disliked, -1)
    data = build_dataset(core.db, assistant.id, assistant.instructions, held_out_fraction=0)
    turns = {c["messages"][1]["content"]: c["messages"][2] for c in data.train}
    assert "capital of France?" in turns and turns["capital of France?"]["content"] == "Paris"
    # A disliked reply with no correction teaches nothing, so its chat is dropped whole.
    assert "2+2?" not in turns
    assert data.stats["filters"]["replaced_by_correction"] == 1
    assert data.stats["filters"]["thumbs_down_not_learned"] == 1
    assert data.stats["filters"]["nothing_to_learn"] == 1


def test_a_disliked_turn_inside_a_longer_conversation_gets_weight_zero(core):
    assistant = make(core)
    user = Actor("u")
    _, ids = converse(core, user, "helper", [("one", "1"), ("two", "22")])
    core.feedback.rate(user, ids[1], -1)
    data = build_dataset(core.db, assistant.id, assistant.instructions, held_out_fraction=0)
    (chat,) = [c["messages"] for c in data.train]
    assert chat[2] == {"role": "assistant", "content": "1"}
    assert chat[4] == {"role": "assistant", "content": "22", "weight": 0}


def test_duplicates_failed_replies_and_over_long_chats_are_dropped(core):
    assistant = make(core)
    user = Actor("u")
    converse(core, user, "helper", [("same", "answer")])
    converse(core, user, "helper", [("same", "answer")])
    converse(core, user, "helper", [("broken", "")], status="error")
    converse(core, user, "helper", [("tell me a lot", "long " * 2000)])
    data = build_dataset(core.db, assistant.id, assistant.instructions, held_out_fraction=0)
    assert len(data.train) == 1
    filters = data.stats["filters"]
    assert filters["duplicates"] == 1
    assert filters["failed_replies"] == 1
    assert filters["too_long"] == 1


def test_the_held_out_split_is_stable_and_disjoint(core):
    assistant = make(core)
    for i in range(60):
        core.examples.add(OWNER, "helper", f"question {i}", f"answer {i}")
    first = build_dataset(core.db, assistant.id, assistant.instructions)
    core.examples.add(OWNER, "helper", "one more", "example")
    second = build_dataset(core.db, assistant.id, assistant.instructions)
    assert first.held_out, "60 chats at 10% should hold some out"
    assert first.held_out == [c for c in second.held_out if c in first.held_out]
    train = {json.dumps(c) for c in second.train}
    assert not train & {json.dumps(c) for c in second.held_out}
    assert second.stats["held_out_chats"] + second.stats["train_chats"] == 61
    assert is_held_out("00000000" + "0" * 56) and not is_held_out("ffffffff" + "0" * 56)
