"""Discord end to end: feedback, streaming, splitting, 429s, a provider that is down, privacy."""

from __future__ import annotations

from discord_fake.world import (
    World,
    answer_to,
    bind,
    conversation_of,
    create_assistant,
    stored_messages,
    use_scripted,
    wait_answer,
)

from bot.discord.split import DISCORD_LIMIT


async def ask(w: World, user, text: str, assistant: str = "helper", channel=None):
    ix = await w.fake.slash(
        "chat",
        user=user,
        channel=channel or w.channel,
        options={"assistant": assistant, "message": text},
    )
    return await wait_answer(w, ix)


def feedback_rows(core) -> list[dict]:
    return list(core.db.query("SELECT * FROM feedback ORDER BY id"))


async def test_thumbs_and_improve_then_owner_adopts_the_correction(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    ix = await ask(w, w.bob, "hello")
    answer = ix.original
    up = await w.fake.click(answer, "👍", user=w.bob)
    await w.fake.answered(up)
    assert up.ephemeral and "👍" in up.text()
    down = await w.fake.click(answer, "👎", user=w.bob)
    await w.fake.answered(down)
    rows = feedback_rows(w.core)
    assert [(r["user_id"], r["rating"]) for r in rows] == [(str(w.bob.id), -1)], "replaced"

    opened = await w.fake.click(answer, "Improve", user=w.bob)
    await w.fake.answered(opened)
    saved = await w.fake.submit_modal(opened, {"A better answer": "Hello, Bob!"})
    await w.fake.answered(saved)
    assert "Saved as a correction" in saved.text() and saved.ephemeral
    assert feedback_rows(w.core)[-1]["correction"] == "Hello, Bob!"
    # Bob is not the owner: turning his correction into an example is refused.
    adopt = await w.fake.click(saved.original, "Add as example", user=w.bob)
    await w.fake.answered(adopt)
    assert "Only the owner of 'helper'" in adopt.text()

    # The owner improves an answer and adopts it.
    mine = await ask(w, w.alice, "hi there")
    opened = await w.fake.click(mine.original, "Improve", user=w.alice)
    await w.fake.answered(opened)
    saved = await w.fake.submit_modal(opened, {"A better answer": "Hi! How can I help?"})
    await w.fake.answered(saved)
    adopt = await w.fake.click(saved.original, "Add as example", user=w.alice)
    await w.fake.answered(adopt)
    assert "Added as example" in adopt.text()
    examples = w.core.examples.list(w.bot_actor(w.alice), "helper")
    assert [(e.input, e.output, e.source) for e in examples] == [
        ("hi there", "Hi! How can I help?", "correction")
    ]


async def test_starter_button_starts_a_chat(world: World):
    w = world
    await create_assistant(w, w.alice, "helper", starters="Tell me a joke")
    shown = await w.fake.slash(
        "assistant", "show", user=w.bob, channel=w.channel, options={"name": "helper"}
    )
    await w.fake.answered(shown)
    started = await w.fake.click(shown.original, "Tell me a joke", user=w.bob)
    await wait_answer(w, started)
    assert started.original.content == "echo: Tell me a joke"
    await w.fake.wait_until(lambda: started.original.thread, what="a thread for follow-ups")


async def test_streaming_edits_at_most_about_once_a_second(world: World):
    w = world
    w.bot.stream_interval = 1.0  # the production setting (the test world streams faster)
    w.model.chunk_delay = 0.1
    await create_assistant(w, w.alice, "helper")
    use_scripted(w, "helper", w.alice)
    text = " ".join(f"w{i}" for i in range(34))  # 35 chunks with "echo:", about 3.5 s
    ix = await ask(w, w.bob, text)
    message = ix.original
    assert message.content == f"echo: {text}"
    times = [e.at for e in message.edits]
    assert len(times) >= 3, "the reply was shown while it streamed"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Every edit while streaming waits a second; only the final one (with buttons) may not.
    assert all(g >= 0.95 for g in gaps[:-1]), gaps
    assert len(times) <= 3.5 / 1.0 + 2


async def test_a_reply_done_within_the_interval_is_shown_once_with_its_buttons(world: World):
    w = world
    w.bot.stream_interval = 1.0
    w.model.chunk_delay = 0.05  # four chunks, done in about 0.2 s
    await create_assistant(w, w.alice, "helper")
    use_scripted(w, "helper", w.alice)
    ix = await ask(w, w.bob, "one two three")
    message = ix.original
    assert [e.content for e in message.edits] == ["echo: one two three"]  # no partial text first
    assert message.buttons()


async def test_long_reply_splits_under_2000_without_breaking_code(world: World):
    w = world
    code = "\n".join(f"    print({i})  # some comment to make the line longer" for i in range(80))
    w.model.reply = "Here is the code:\n```python\n" + code + "\n```\nThat's all.\n" + "x " * 600
    await create_assistant(w, w.alice, "helper")
    use_scripted(w, "helper", w.alice)
    ix = await ask(w, w.bob, "code please")
    parts = ix.messages()
    assert len(parts) >= 3
    assert all(len(m.content) <= DISCORD_LIMIT for m in parts)
    for m in parts:
        fences = [line for line in m.content.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, m.content
    assert parts[1].content.startswith("```python")
    assert [bool(m.buttons()) for m in parts] == [False] * (len(parts) - 1) + [True]
    assert all(m.allowed_mentions == {"parse": []} for m in parts)
    # Every part is linked to the stored reply: replying to the first one continues the chat.
    follow = await w.fake.user_message(w.channel, w.bob, "shorter please", reply_to=parts[0])
    await w.fake.wait_until(
        lambda: any(m.reference is follow and m.buttons() for m in w.fake.bot_messages(w.channel)),
        what="the answer to a reply to the first part",
    )
    assert conversation_of(w.core, "shorter please") == conversation_of(w.core, "code please")


async def test_model_output_never_pings(world: World):
    w = world
    w.model.reply = f"@everyone look <@{w.bob.id}> and <@&{w.guild.roles[0].id}> @here"
    await create_assistant(w, w.alice, "helper")
    use_scripted(w, "helper", w.alice)
    ix = await ask(w, w.alice, "ping them")
    assert ix.original.content.startswith("@everyone")
    assert w.fake.pings(ix.original) == []
    await bind(w)
    asked = await w.fake.user_message(w.channel, w.alice, "again", mention_bot=True)
    reply = await answer_to(w, asked)
    assert w.fake.pings(reply) == []


async def test_discord_429_on_send_is_waited_out(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    await bind(w)
    w.fake.rate_limit("POST", r"/channels/\d+/messages$", times=1, retry_after=0.7)
    asked = await w.fake.user_message(w.channel, w.bob, "are you there?", mention_bot=True)
    reply = await answer_to(w, asked, "the answer after the 429")
    limited = w.fake.rate_limited[0]
    sent = next(
        r
        for r in w.fake.requests
        if r.method == "POST"
        and r.path.endswith("/messages")
        and r.status == 200
        and r.at > limited.at
    )
    assert sent.at - limited.at >= 0.7
    assert reply.content == "echo: are you there?"
    # The same on the interaction webhook (follow-ups).
    w.fake.rate_limit("POST", r"/webhooks/\d+/", times=1, retry_after=0.5)
    ix = await ask(w, w.bob, "and here?")
    assert ix.original.content == "echo: and here?"
    assert len(w.fake.rate_limited) == 2


async def test_provider_down_says_so_in_the_channel_and_keeps_the_message(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    use_scripted(w, "helper", w.alice)
    w.model.stop()
    ix = await ask(w, w.bob, "anyone home?")
    assert "⚠️" in ix.original.content and "Could not reach" in ix.original.content
    assert not ix.original.ephemeral
    stored = stored_messages(w.core, w.bob)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["anyone home?"]


async def test_per_user_rate_limit_is_friendly(world: World):
    w = world
    w.bot.limiter.per_minute = 1
    await create_assistant(w, w.alice, "helper")
    await ask(w, w.bob, "one")
    ix = await w.fake.slash(
        "chat", user=w.bob, channel=w.channel, options={"assistant": "helper", "message": "two"}
    )
    await w.fake.answered(ix)
    assert ix.ephemeral and "sending messages quickly" in ix.text()
    other = await ask(w, w.alice, "mine")  # another user is not limited
    assert other.original.content == "echo: mine"


async def test_privacy_forget_counts_and_deletes(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    await ask(w, w.bob, "one")
    await ask(w, w.bob, "two")
    await ask(w, w.alice, "mine")
    out = await w.fake.slash("privacy", "optout", user=w.bob, channel=w.channel)
    await w.fake.answered(out)
    assert w.core.privacy.is_opted_out(str(w.bob.id))
    ix = await w.fake.slash("privacy", "forget", user=w.bob, channel=w.channel)
    await w.fake.answered(ix)
    assert "Deleted 2 messages" in ix.text() and ix.ephemeral
    assert stored_messages(w.core, w.bob) == []
    assert [m["content"] for m in stored_messages(w.core, w.alice) if m["role"] == "user"] == [
        "mine"
    ]


async def test_a_message_too_long_for_the_prompt_is_refused_privately_and_not_stored(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    ix = await w.fake.slash(
        "chat",
        user=w.bob,
        channel=w.channel,
        options={"assistant": "helper", "message": "word " * 1200},  # Discord's 6,000 limit
    )
    await w.fake.wait_until(lambda: ix.followups, 30, "the refusal")
    assert ix.ephemeral, "the placeholder is gone and the refusal is the user's alone"
    assert "send a shorter message" in ix.text() and "\n" not in ix.text().strip()
    assert stored_messages(w.core, w.bob) == [], "nothing stored"
    started = w.core.db.query("SELECT id FROM conversations WHERE user_id = ?", [str(w.bob.id)])
    assert list(started) == [], "not even the conversation it would have started"
