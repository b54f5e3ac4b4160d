"""Discord end to end, the owner's side: reviewing corrections, and what /assistant promote,
status and rollback say before any model is trained (refusals are one ephemeral sentence).
The full promotion with a real training job is in test_discord_promotion_e2e.py."""

from __future__ import annotations

import json

from discord_fake.world import World, create_assistant, run, wait_answer


def one_sentence(ix, *phrases: str) -> None:
    text = ix.text()
    assert ix.ephemeral, f"ephemeral: {text!r}"
    assert all(p in text for p in phrases), text
    assert "\n" not in text.strip(), "one sentence"


async def improve(w: World, user, question: str, better: str) -> None:
    ix = await w.fake.slash(
        "chat", user=user, channel=w.channel, options={"assistant": "helper", "message": question}
    )
    await wait_answer(w, ix)
    opened = await w.fake.click(ix.original, "Improve", user=user)
    await w.fake.answered(opened)
    saved = await w.fake.submit_modal(opened, {"A better answer": better})
    await w.fake.answered(saved)
    assert "/example corrections" in saved.text()


async def test_owner_reviews_corrections_and_adds_one_as_example(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    await improve(w, w.bob, "capital of France?", "Paris.")
    await improve(w, w.bob, "2+2?", "4")

    refused = await run(
        w, "example", "corrections", user=w.bob, channel=w.channel, options={"assistant": "helper"}
    )
    one_sentence(refused, "helper")
    assert not refused.original.buttons()

    listed = await run(
        w,
        "example",
        "corrections",
        user=w.alice,
        channel=w.channel,
        options={"assistant": "helper"},
    )
    assert listed.ephemeral
    assert "Paris." in listed.text() and "4" in listed.text()
    assert listed.original.embeds[0]["footer"]["text"] == "Page 1 of 1 · 2 corrections"
    labels = [b["label"] for b in listed.original.buttons()]
    assert len(labels) == 2 and all(label.endswith("as example") for label in labels)

    added = await w.fake.click(listed.original, labels[0], user=w.alice)
    await w.fake.answered(added)
    assert "Added as example" in added.text()
    examples = w.core.examples.list(w.bot_actor(w.alice), "helper")
    assert [(e.input, e.output) for e in examples] == [("capital of France?", "Paris.")]
    twice = await w.fake.click(listed.original, labels[0], user=w.alice)
    await w.fake.answered(twice)
    one_sentence(twice, "already has this example")

    # A manager may review too; what is left is the one not yet adopted.
    again = await run(
        w,
        "example",
        "corrections",
        user=w.manager,
        channel=w.channel,
        options={"assistant": "helper"},
    )
    assert again.original.embeds[0]["footer"]["text"] == "Page 1 of 1 · 1 correction"
    assert "Paris." not in again.text()
    empty = await run(
        w,
        "example",
        "corrections",
        user=w.alice,
        channel=w.channel,
        options={"assistant": "helper", "page": 2},
    )
    one_sentence(empty, "no corrections to review on page 2")


async def test_promote_status_and_rollback_refusals(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    # Not the owner, no Manage Server: refused.
    for sub in ("promote", "status", "rollback"):
        ix = await run(
            w, "assistant", sub, user=w.bob, channel=w.channel, options={"name": "helper"}
        )
        one_sentence(ix, "helper")
        assert ix.acknowledged_after < 3
    # The owner, with too little data: told how much is needed, nothing started.
    ix = await run(
        w, "assistant", "promote", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    one_sentence(ix, "0 training chats", "at least 10")
    assert not any(m.buttons() for m in ix.messages())
    ix = await run(
        w, "assistant", "status", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    one_sentence(ix, "has not been promoted yet")
    ix = await run(
        w, "assistant", "rollback", user=w.manager, channel=w.channel, options={"name": "helper"}
    )
    one_sentence(ix, "is not using a fine-tuned model")
    assert list(w.core.db.query("SELECT * FROM promotions")) == []


async def test_promote_shows_the_dataset_and_cancel_starts_nothing(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    lines = "\n".join(
        json.dumps({"input": f"question {i}", "output": f"answer {i}"}) for i in range(20)
    )
    w.core.examples.import_data(w.bot_actor(w.alice), "helper", "e.jsonl", lines.encode())
    ix = await run(
        w, "assistant", "promote", user=w.manager, channel=w.channel, options={"name": "helper"}
    )
    asked = next((m for m in ix.messages() if m.buttons()), None)
    assert asked is not None, ix.text()
    assert ix.ephemeral and "Promote helper?" in asked.content
    assert "training chats" in asked.content and "held-out" in asked.content
    assert "20 of them carry the examples each would be served with" in asked.content
    assert [b["label"] for b in asked.buttons()] == ["Promote", "Cancel"]
    cancelled = await w.fake.click(asked, "Cancel", user=w.manager)
    await w.fake.answered(cancelled)
    assert asked.content == "Nothing was promoted." and not asked.buttons()
    assert list(w.core.db.query("SELECT * FROM promotions")) == []
