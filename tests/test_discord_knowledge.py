"""Discord end to end: /knowledge add|list|remove for an assistant's managers, one sentence for
everyone else and for bad files; answers show their sources to anyone who may use the assistant."""

from __future__ import annotations

import json

from discord_fake.world import World, create_assistant, run, wait_answer

GUIDE = b"""# Opening hours
The shop opens at nine in the morning and closes at five in the afternoon.

# Refunds
Refunds are given within thirty days when the receipt is shown.
"""


async def knowledge(w: World, command: str, user, **options):
    return await run(
        w,
        "knowledge",
        command,
        user=user,
        channel=w.channel,
        options={"assistant": "helper", **options},
    )


async def test_a_manager_adds_lists_and_removes_knowledge_files(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    added = await knowledge(w, "add", w.alice, file=("guide.md", GUIDE))
    assert added.ephemeral
    files = w.core.knowledge.list(w.bot_actor(w.alice), "helper")
    assert [(f.name, f.chunks) for f in files] == [("guide.md", 2)]
    assert added.text() == (
        f"Added guide.md to **helper** as knowledge file #{files[0].id} (2 chunks)."
    )
    listed = await knowledge(w, "list", w.alice)
    assert listed.ephemeral
    assert f"`#{files[0].id}` guide.md · md" in json.dumps(
        listed.original.embeds, ensure_ascii=False
    )
    again = await knowledge(w, "add", w.alice, file=("copy.md", GUIDE))
    assert "has the same content as guide.md" in again.text() and again.ephemeral
    removed = await knowledge(w, "remove", w.alice, file=files[0].id)
    assert removed.text() == f"Removed knowledge file #{files[0].id} guide.md from **helper**."
    empty = await knowledge(w, "list", w.alice)
    assert "has no knowledge files" in empty.text()
    missing = await knowledge(w, "remove", w.alice, file=999)
    assert "has no knowledge file #999" in missing.text()


async def test_a_bad_file_is_one_sentence_and_nothing_is_stored(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    png = await knowledge(w, "add", w.alice, file=("cat.png", b"\x89PNG\r\n", "image/png"))
    assert png.ephemeral and "cat.png" in png.text() and len(png.text().splitlines()) == 1
    huge = await knowledge(w, "add", w.alice, file=("huge.txt", b"x" * 10_000_001))
    assert "huge.txt is 10.0 MB; the limit is 10 MB a file" in huge.text()
    assert w.core.knowledge.list(w.bot_actor(w.alice), "helper") == []


async def test_a_member_sees_the_citations_but_cannot_see_or_change_the_files(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    await knowledge(w, "add", w.alice, file=("guide.md", GUIDE))
    w.model.reply = "Within thirty days [1]."
    ix = await wait_answer(
        w,
        await w.fake.slash(
            "chat",
            user=w.bob,
            channel=w.channel,
            options={"assistant": "helper", "message": "when can I get my money back?"},
        ),
    )
    shown = ix.text()
    assert "Within thirty days [1]." in shown
    assert "Sources: [1] guide.md, Refunds" in shown
    assert "when the receipt is shown" not in shown  # citations, never the chunk texts
    for command, options in (
        ("list", {}),
        ("add", {"file": ("mine.md", b"# Mine\nBob's text.\n")}),
        ("remove", {"file": 1}),
    ):
        refused = await knowledge(w, command, w.bob, **options)
        assert refused.ephemeral and "Only the owner of 'helper'" in refused.text(), refused.text()
    assert [f.name for f in w.core.knowledge.list(w.bot_actor(w.alice), "helper")] == ["guide.md"]
