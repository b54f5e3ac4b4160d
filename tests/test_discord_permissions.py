"""Discord end to end: every refusal is one ephemeral sentence, and nobody reaches another
user's private assistant or another guild's data."""

from __future__ import annotations

from discord_fake.world import World, create_assistant, run


def refused(ix, *phrases: str) -> None:
    text = ix.text()
    assert ix.ephemeral, f"a refusal is ephemeral: {text!r}"
    assert all(p in text for p in phrases), text
    assert not ix.original.buttons() if ix.original else True
    assert "Traceback" not in text and "\n" not in text.strip(), "one sentence"


async def test_private_assistant_of_another_user(world: World):
    w = world
    await create_assistant(w, w.alice, "secret", visibility="private")
    for command, sub, options in [
        ("chat", None, {"assistant": "secret", "message": "hi"}),
        ("assistant", "show", {"name": "secret"}),
        ("example", "list", {"assistant": "secret"}),
        ("assistant", "export", {"name": "secret"}),
    ]:
        ix = await run(w, command, sub, user=w.bob, channel=w.channel, options=options)
        refused(ix, "No assistant called 'secret'")
    assert list(w.core.db.query("SELECT * FROM messages")) == [], "nothing was asked or stored"
    bob_sees = await w.fake.autocomplete(
        "chat", user=w.bob, channel=w.channel, options={"assistant": "se"}, focused="assistant"
    )
    alice_sees = await w.fake.autocomplete(
        "chat", user=w.alice, channel=w.channel, options={"assistant": "se"}, focused="assistant"
    )
    assert bob_sees == [] and [c["name"] for c in alice_sees] == ["secret"]


async def test_another_guilds_assistant_is_out_of_reach(world: World):
    w = world
    await create_assistant(w, w.alice, "house")  # guild visibility in Guild One
    # Alice and Bob are both members of Guild Two; from there the assistant does not exist.
    for user in (w.alice, w.bob):
        ix = await run(
            w,
            "chat",
            user=user,
            channel=w.other_channel,
            options={"assistant": "house", "message": "hi"},
        )
        if user is w.alice:
            # Its owner still reaches her own assistant from anywhere.
            await w.fake.wait_until(lambda ix=ix: ix.original and ix.original.buttons())
            continue
        refused(ix, "No assistant called 'house'")
    listed = await run(w, "assistant", "list", user=w.bob, channel=w.other_channel)
    assert "house" not in listed.text()


async def test_non_owner_cannot_edit_delete_or_export_but_a_manager_can(world: World):
    w = world
    await create_assistant(w, w.alice, "house")
    for sub in ("edit", "delete", "export"):
        ix = await run(
            w, "assistant", sub, user=w.bob, channel=w.channel, options={"name": "house"}
        )
        refused(ix, "Only the owner of 'house' or a member with Manage Server")
    ix = await run(
        w, "example", "add", user=w.bob, channel=w.channel, options={"assistant": "house"}
    )
    refused(ix, "Only the owner")
    ix = await run(
        w,
        "example",
        "import",
        user=w.bob,
        channel=w.channel,
        options={"assistant": "house", "file": ("e.jsonl", b'{"input":"a","output":"b"}')},
    )
    refused(ix, "Only the owner")
    # Max has Manage Server: the edit modal opens filled in, and the export works.
    opened = await run(
        w, "assistant", "edit", user=w.manager, channel=w.channel, options={"name": "house"}
    )
    assert opened.modal is not None
    values = {
        row.get("label") or row["components"][0]["label"]: (
            row.get("component") or row["components"][0]
        ).get("value")
        for row in opened.modal["components"]
    }
    assert values["Name"] == "house" and values["Instructions"] == "Answer briefly."
    saved = await w.fake.submit_modal(opened, {"Instructions": "Answer at length."})
    await w.fake.answered(saved)
    assert "version 2" in saved.text()
    exported = await run(
        w, "assistant", "export", user=w.manager, channel=w.channel, options={"name": "house"}
    )
    assert exported.original.attachments


async def test_delete_asks_to_confirm(world: World):
    w = world
    await create_assistant(w, w.alice, "house")
    ix = await run(
        w, "assistant", "delete", user=w.alice, channel=w.channel, options={"name": "house"}
    )
    assert ix.ephemeral and "Delete **house**" in ix.text()
    kept = await w.fake.click(ix.original, "Cancel", user=w.alice)
    await w.fake.answered(kept)
    assert ix.original.content == "Nothing was deleted." and ix.original.components == []
    assert w.core.assistants.list(w.bot_actor(w.alice))
    ix = await run(
        w, "assistant", "delete", user=w.alice, channel=w.channel, options={"name": "house"}
    )
    done = await w.fake.click(ix.original, "Delete", user=w.alice)
    await w.fake.answered(done)
    assert "Deleted 'house'" in ix.original.content
    assert w.core.assistants.list(w.bot_actor(w.alice)) == []


async def test_unknown_assistant(world: World):
    w = world
    ix = await run(
        w, "chat", user=w.bob, channel=w.channel, options={"assistant": "nosuch", "message": "hi"}
    )
    refused(ix, "No assistant called 'nosuch'")
    ix = await run(
        w, "assistant", "use", user=w.manager, channel=w.channel, options={"name": "nosuch"}
    )
    refused(ix, "No assistant called 'nosuch'")


async def test_binding_a_channel_needs_manage_server(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    ix = await run(
        w, "assistant", "use", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    refused(ix, "needs Manage Server")
    assert w.core.chat.bound(str(w.channel.id)) is None
    ix = await run(
        w, "assistant", "use", user=w.manager, channel=w.channel, options={"name": "helper"}
    )
    assert "now answers here" in ix.text() and not ix.ephemeral
    assert w.core.chat.bound(str(w.channel.id)).name == "helper"
    # Unbinding is the guild's call too.
    ix = await run(w, "assistant", "use", user=w.bob, channel=w.channel, options={"name": "none"})
    refused(ix, "needs Manage Server")
    assert w.core.chat.bound(str(w.channel.id)) is not None
