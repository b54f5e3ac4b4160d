"""Discord end to end: examples by modal and by file, assistant export/import, bad input."""

from __future__ import annotations

import json

from discord_fake.world import World, create_assistant, run


async def import_file(w: World, file: tuple):
    """Alice runs `/example import` on her assistant `poet` with the attachment `file`."""
    return await run(
        w,
        "example",
        "import",
        user=w.alice,
        channel=w.channel,
        options={"assistant": "poet", "file": file},
    )


async def test_example_add_by_modal_and_list(world: World):
    w = world
    await create_assistant(w, w.alice, "poet")
    opened = await run(
        w, "example", "add", user=w.alice, channel=w.channel, options={"assistant": "poet"}
    )
    submitted = await w.fake.submit_modal(
        opened, {"Message": "Write about rain", "Good answer": "Soft rain on the roof"}
    )
    await w.fake.answered(submitted)
    assert "Added example" in submitted.text() and submitted.ephemeral
    assert submitted.acknowledged_after < 3
    listed = await run(
        w, "example", "list", user=w.alice, channel=w.channel, options={"assistant": "poet"}
    )
    assert "Write about rain → Soft rain on the roof" in listed.text()
    assert "Page 1 of 1" in json.dumps(listed.original.embeds)
    # Examples are the owner's work: other members may not read them.
    hidden = await run(
        w, "example", "list", user=w.bob, channel=w.channel, options={"assistant": "poet"}
    )
    assert hidden.ephemeral and "Only the owner of 'poet'" in hidden.text()


async def test_example_import_jsonl_and_csv_then_remove(world: World):
    w = world
    await create_assistant(w, w.alice, "poet")
    jsonl = b'{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n'
    ix = await import_file(w, ("ex.jsonl", jsonl))
    assert "Imported 2 examples" in ix.text()
    csv = b"input,output\ne,f\na,b\n"
    ix = await import_file(w, ("ex.csv", csv, "text/csv"))
    assert "Imported 1 examples" in ix.text() and "1 duplicates skipped" in ix.text()
    assert w.core.examples.count(w.bot_actor(w.alice), "poet") == 3
    first = w.core.examples.list(w.bot_actor(w.alice), "poet")[0]
    ix = await run(
        w,
        "example",
        "remove",
        user=w.alice,
        channel=w.channel,
        options={"assistant": "poet", "id": first.id},
    )
    assert f"Removed example #{first.id}" in ix.text()
    assert w.core.examples.count(w.bot_actor(w.alice), "poet") == 2


async def test_bad_files_are_refused_whole_with_one_sentence(world: World):
    w = world
    await create_assistant(w, w.alice, "poet")
    bad = b'{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n{"input": "x"}\n'
    ix = await import_file(w, ("bad.jsonl", bad))
    assert "3" in ix.text() and ix.ephemeral
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    ix = await import_file(w, ("cat.png", png, "image/png"))
    assert "not UTF-8 text" in ix.text() or "not a text file" in ix.text()
    huge = b"x" * (10 * 1024 * 1024 + 1)
    ix = await import_file(w, ("huge.jsonl", huge))
    assert "at most 10 MB" in ix.text()
    downloads = [r.path for r in w.fake.requests if r.path.startswith("/attachments/")]
    assert not any(p.endswith("/huge.jsonl") for p in downloads), "refused before downloading"
    assert w.core.examples.count(w.bot_actor(w.alice), "poet") == 0, "nothing half-written"
    for text in (i.text() for i in w.fake.interactions.values() if i.type == 2):
        assert "Traceback" not in text


async def test_oversize_modal_fields_get_one_sentence_and_create_nothing(world: World):
    w = world
    opened = await run(w, "assistant", "create", user=w.alice, channel=w.channel)
    starters_label = next(
        (r.get("label") or r["components"][0]["label"])
        for r in opened.modal["components"]
        if (r.get("label") or r["components"][0]["label"]).startswith("Conversation")
    )
    five = "\n".join(f"starter {i}" for i in range(5))
    ix = await w.fake.submit_modal(
        opened, {"Name": "poet", "Instructions": "Haiku.", starters_label: five}
    )
    await w.fake.answered(ix)
    assert "at most 4 conversation starters" in ix.text() and ix.ephemeral
    opened = await run(w, "assistant", "create", user=w.alice, channel=w.channel)
    ix = await w.fake.submit_modal(
        opened,
        {"Name": "poet", "Instructions": "Haiku.", "Description": "d" * 1500},
        enforce_limits=False,  # a client that ignores max_length: the core still refuses
    )
    await w.fake.answered(ix)
    assert "description is 1,500 characters" in ix.text()
    opened = await run(w, "assistant", "create", user=w.alice, channel=w.channel)
    ix = await w.fake.submit_modal(opened, {"Name": "no spaces allowed", "Instructions": "x"})
    await w.fake.answered(ix)
    assert "is not valid" in ix.text()
    assert w.core.assistants.list(w.bot_actor(w.alice)) == []


async def test_export_then_import_the_same_assistant(world: World):
    w = world
    await create_assistant(w, w.alice, "poet", instructions="You write haiku.")
    await import_file(w, ("ex.jsonl", b'{"input":"a","output":"b"}'))
    ix = await run(
        w, "assistant", "export", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    attachment = ix.original.attachments[0]
    assert attachment.filename == "poet.json"
    bundle = json.loads(attachment.data)
    assert bundle["assistant"]["instructions"] == "You write haiku."
    assert bundle["examples"] == [{"input": "a", "output": "b"}]
    ix = await run(
        w,
        "assistant",
        "import",
        user=w.alice,
        channel=w.channel,
        options={"file": ("poet.json", attachment.data), "name": "poet2"},
    )
    assert "Imported **poet2** with 1 examples" in ix.text()
    ix = await run(
        w,
        "assistant",
        "import",
        user=w.alice,
        channel=w.channel,
        options={"file": ("x.json", b"[1, 2]")},
    )
    assert "not an assistant exported" in ix.text()
