"""End to end: the real discord.py client runs the real bot against a loopback Discord
(tests/discord_fake), with a real Core in a temporary FEWTUNE_HOME and a loopback model."""

from __future__ import annotations

import asyncio

from discord_fake.harness import running_bot
from discord_fake.world import (
    World,
    answer_to,
    bind,
    conversation_of,
    create_assistant,
)


async def test_login_sync_and_a_command_answered(world: World):
    w = world
    assert w.fake.identify_payloads, "the bot identified on the gateway"
    intents = int(w.fake.identify_payloads[0]["intents"])
    assert intents & (1 << 15), "message content intent requested"
    names = {c["name"] for c in w.fake.commands[None]}
    assert names == {"assistant", "example", "knowledge", "chat", "privacy"}
    subs = {
        c["name"]: sorted(o["name"] for o in c.get("options", []) if o["type"] == 1)
        for c in w.fake.commands[None]
    }
    assert subs["assistant"] == sorted(
        [
            "create",
            "edit",
            "show",
            "list",
            "delete",
            "use",
            "export",
            "import",
            "promote",
            "status",
            "rollback",
        ]
    )
    assert subs["example"] == sorted(["add", "import", "list", "remove", "corrections"])
    assert subs["knowledge"] == sorted(["add", "list", "remove"])
    assert subs["privacy"] == sorted(["optout", "optin", "forget"])
    chat = next(c for c in w.fake.commands[None] if c["name"] == "chat")
    assert [o["name"] for o in chat["options"]] == ["assistant", "message"]

    ix = await w.fake.slash("assistant", "list", user=w.alice, channel=w.channel)
    await w.fake.answered(ix)
    assert ix.ephemeral
    assert "No assistants yet" in ix.text()
    assert ix.acknowledged_after is not None and ix.acknowledged_after < 3


async def test_create_by_modal_then_show_and_list(world: World):
    w = world
    await create_assistant(
        w,
        w.alice,
        "poet",
        description="Writes short poems",
        instructions="You write haiku.",
        starters="Write about rain\nWrite about snow",
    )
    shown = await w.fake.slash(
        "assistant", "show", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(shown)
    text = shown.text()
    assert "poet" in text and "Writes short poems" in text and "You write haiku." in text
    labels = [b.get("label") for b in shown.original.buttons()]
    assert labels == ["Write about rain", "Write about snow"]

    # Bob sees the guild assistant but not its instructions.
    seen = await w.fake.slash(
        "assistant", "show", user=w.bob, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(seen)
    assert "Writes short poems" in seen.text() and "You write haiku." not in seen.text()

    listed = await w.fake.slash("assistant", "list", user=w.bob, channel=w.channel)
    await w.fake.answered(listed)
    assert "poet" in listed.text()


async def test_chat_answers_streams_opens_thread_and_follow_up_continues(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    ix = await w.fake.slash(
        "chat",
        user=w.bob,
        channel=w.channel,
        options={"assistant": "helper", "message": "hello there"},
    )
    await w.fake.wait_until(lambda: ix.original and ix.original.buttons(), what="the answer")
    assert ix.acknowledged_after < 3
    assert ix.original.content == "echo: hello there"
    assert not ix.original.ephemeral
    assert [b.get("emoji", {}).get("name") or b.get("label") for b in ix.original.buttons()] == [
        "👍",
        "👎",
        "Improve",
    ]
    assert ix.original.allowed_mentions == {"parse": []}
    thread = await w.fake.wait_until(lambda: ix.original.thread, what="a thread on the answer")
    assert "helper" in thread.name

    follow = await w.fake.user_message(thread, w.bob, "and again?")
    answer = await answer_to(w, follow, "the follow-up answer")
    assert answer.content == "echo: and again?"
    # One conversation: the follow-up continued the first exchange.
    assert conversation_of(w.core, "and again?") == conversation_of(w.core, "hello there")


async def test_bound_channel_mention_and_reply_chain(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    bound = await w.fake.slash(
        "assistant", "use", user=w.manager, channel=w.channel, options={"name": "helper"}
    )
    await w.fake.answered(bound)
    assert "now answers here" in bound.text()

    ignored = await w.fake.user_message(w.channel, w.bob, "just chatting, no mention")
    first = await w.fake.user_message(w.channel, w.bob, "what is 2+2?", mention_bot=True)
    answer = await answer_to(w, first, "an answer to the mention")
    assert answer.content == "echo: what is 2+2?"
    assert not any(m.reference is ignored for m in w.fake.bot_messages(w.channel))

    second = await w.fake.user_message(w.channel, w.bob, "and 3+3?", reply_to=answer)
    await answer_to(w, second, "an answer in the reply chain")
    assert conversation_of(w.core, "and 3+3?") == conversation_of(w.core, "what is 2+2?")
    # A new mention (not a reply) starts a new conversation.
    third = await w.fake.user_message(w.channel, w.bob, "fresh start", mention_bot=True)
    await w.fake.wait_until(
        lambda: any(m.reference is third and m.buttons() for m in w.fake.bot_messages(w.channel)),
        what="an answer to the new mention",
    )
    assert conversation_of(w.core, "fresh start") != conversation_of(w.core, "what is 2+2?")


async def test_a_reply_to_an_answer_not_yet_linked_continues_its_conversation(world: World):
    """A short answer is posted complete and linked right after; a user quicker than the link
    (here: the link removed) is still in the same conversation, in a bound channel and after
    /chat alike."""
    w = world
    await create_assistant(w, w.alice, "helper")
    await bind(w)
    first = await w.fake.user_message(w.channel, w.bob, "what is 2+2?", mention_bot=True)
    answer = await answer_to(w, first, "an answer to the mention")
    ix = await w.fake.slash(
        "chat", user=w.bob, channel=w.channel, options={"assistant": "helper", "message": "hi"}
    )
    await w.fake.wait_until(lambda: ix.original and ix.original.buttons(), what="the answer")
    await asyncio.sleep(0.3)  # the links are written; remove the answers' own
    for message in (answer, ix.original):
        w.core.db.execute("DELETE FROM external_ids WHERE external_id = ?", [str(message.id)])
    w.core.db.conn.commit()

    for question, replied in (("and 3+3?", answer), ("and then?", ix.original)):
        follow = await w.fake.user_message(w.channel, w.bob, question, reply_to=replied)
        await answer_to(w, follow, "an answer in the reply chain")
    assert conversation_of(w.core, "and 3+3?") == conversation_of(w.core, "what is 2+2?")
    assert conversation_of(w.core, "and then?") == conversation_of(w.core, "hi")


async def test_dm_uses_the_last_assistant(world: World):
    w = world
    await create_assistant(w, w.alice, "mine", visibility="public")
    ix = await w.fake.slash(
        "chat", user=w.alice, channel=w.channel, options={"assistant": "mine", "message": "first"}
    )
    await w.fake.wait_until(lambda: ix.original and ix.original.buttons(), what="the answer")
    dm = w.fake.dm_channel(w.alice)
    asked = await w.fake.user_message(dm, w.alice, "in private")
    answer = await answer_to(w, asked, "a DM answer")
    assert answer.content == "echo: in private"

    newcomer = await w.fake.user_message(w.fake.dm_channel(w.bob), w.bob, "hi")
    hint = await w.fake.wait_until(
        lambda: next((m for m in w.fake.bot_messages() if m.reference is newcomer), None),
        what="a hint for a user without an assistant",
    )
    assert "/chat" in hint.content

    # After a restart the DM goes on with the same conversation (it is found in SQLite).
    await w.bot.close()
    await w.fake.wait_until(lambda: not w.fake.sessions, what="the old session to close")
    async with running_bot(w.fake, w.core, stream_interval=0.2):
        again = await w.fake.user_message(dm, w.alice, "still there?")
        await answer_to(w, again, "a DM answer after the restart")
        assert conversation_of(w.core, "still there?") == conversation_of(w.core, "in private")
