"""The `history` setting: how many earlier exchanges go into each prompt (None: all the budget
holds; 0: every message stands alone), read from what the fake model was sent; and the setting
through every door: validation, the CLI, Discord's modal, export/import, versions, the demo."""

from __future__ import annotations

import asyncio
import json

import pytest
from discord_fake.world import World, create_assistant, modal_labels

from assistants import TERMINAL, Core, InvalidInput
from assistants.assistant import MAX_HISTORY, history_setting
from assistants.demo import install_demo
from assistants.prompt import last_turns
from assistants.transfer import export_assistant, import_assistant


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


EXCHANGES = [
    turn("user", "one"),
    turn("assistant", "1"),
    turn("user", "two"),
    turn("assistant", "2"),
    turn("user", "three"),
    turn("assistant", "3"),
]


# -- which turns -----------------------------------------------------------------------------


def test_last_turns_keeps_whole_exchanges_from_the_end():
    assert last_turns(EXCHANGES, None) == EXCHANGES
    assert last_turns(EXCHANGES, 0) == []
    assert last_turns(EXCHANGES, 1) == EXCHANGES[4:]
    assert last_turns(EXCHANGES, 2) == EXCHANGES[2:]
    assert last_turns(EXCHANGES, 3) == EXCHANGES
    assert last_turns(EXCHANGES, 50) == EXCHANGES
    assert last_turns([], 2) == []


def test_a_message_whose_reply_failed_is_an_exchange_of_its_own():
    # A failed reply is left out of history, so its message stands without an answer.
    history = [turn("user", "one"), turn("assistant", "1"), turn("user", "two (failed)")]
    assert last_turns(history, 1) == [turn("user", "two (failed)")]
    assert last_turns(history, 2) == history


# -- what the model is sent --------------------------------------------------------------------


@pytest.fixture
def talking(fewtune_home, embedder, model):
    """A core whose provider `echo` is the fake model."""
    (fewtune_home / "fewtune.toml").write_text(
        f'[providers.echo]\nbase_url = "{model.base_url}"\nmax_retries = 0\ntimeout = 5\n',
        encoding="utf-8",
    )
    core = Core.open(fewtune_home, embedder=embedder)
    yield core
    asyncio.run(core.providers.close())
    core.close()


async def sent_after_three_exchanges(core: Core, model, history: int | None) -> list[dict]:
    """The messages the model got for a fourth message, after three exchanges."""
    core.assistants.create(
        TERMINAL, "counter", "Count.", model="echo:m", k=0, history=history, temperature=0
    )
    first = await core.chat.ask(TERMINAL, "counter", "one")
    for text in ("two", "three", "four"):
        await core.chat.reply(TERMINAL, first.conversation_id, text)
    return model.history[-1]["messages"]


async def test_history_0_sends_no_earlier_turns(talking, model):
    sent = await sent_after_three_exchanges(talking, model, 0)
    assert sent == [turn("system", "Count."), turn("user", "four")]


async def test_history_2_sends_exactly_the_last_two_exchanges(talking, model):
    sent = await sent_after_three_exchanges(talking, model, 2)
    assert sent == [
        turn("system", "Count."),
        turn("user", "two"),
        turn("assistant", "echo: two"),
        turn("user", "three"),
        turn("assistant", "echo: three"),
        turn("user", "four"),
    ]


async def test_by_default_every_earlier_turn_goes_in(talking, model):
    sent = await sent_after_three_exchanges(talking, model, None)
    assert [m["content"] for m in sent] == [
        "Count.",
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
        "four",
    ]


# -- the setting's values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (None, None),
        ("all", None),
        (" ALL ", None),
        ("", None),
        (0, 0),
        ("0", 0),
        (" 3 ", 3),
        (7, 7),
    ],
)
def test_history_values_are_read_from_numbers_and_text(given, stored):
    assert history_setting(given) == stored


@pytest.mark.parametrize("bad", [-1, "-1", "two", "2.5", 2.5, True, MAX_HISTORY + 1, "1e3"])
def test_a_bad_history_is_one_sentence(core, bad):
    sentence = f"history (earlier exchanges in each prompt) must be a whole number from 0 to {MAX_HISTORY}, or all."
    with pytest.raises(InvalidInput) as refused:
        core.assistants.create(TERMINAL, "helper", "Answer.", history=bad)
    assert str(refused.value) == sentence
    core.assistants.create(TERMINAL, "helper", "Answer.")
    with pytest.raises(InvalidInput, match="must be a whole number"):
        core.assistants.edit(TERMINAL, "helper", history=bad)
    assert core.assistants.get(TERMINAL, "helper").history is None


def test_restore_keeps_the_history_of_its_version(core):
    core.assistants.create(TERMINAL, "helper", "Answer.", history=2)
    core.assistants.edit(TERMINAL, "helper", history=0)
    assert core.assistants.history(TERMINAL, "helper")[-1]["snapshot"]["history"] == 0
    assert core.assistants.restore(TERMINAL, "helper", 1).history == 2
    # A version recorded before the setting existed put every earlier turn in.
    snapshot = json.dumps({"k": 4, "instructions": "Answer."})
    core.db.execute(
        "UPDATE assistant_versions SET snapshot = ? WHERE version = 2 AND assistant_id = ?",
        [snapshot, core.assistants.get(TERMINAL, "helper").id],
    )
    core.db.conn.commit()
    assert core.assistants.restore(TERMINAL, "helper", 2).history is None


def test_export_and_import_keep_the_history(core):
    core.assistants.create(TERMINAL, "helper", "Answer.", history=2)
    exported = export_assistant(core, TERMINAL, "helper")
    assert exported["assistant"]["history"] == 2
    raw = json.dumps(exported).encode()
    copy, _ = import_assistant(core, TERMINAL, raw, name="copy")
    assert copy.history == 2
    # A file exported before the setting existed: every earlier turn, as then.
    del exported["assistant"]["history"]
    older, _ = import_assistant(core, TERMINAL, json.dumps(exported).encode(), name="older")
    assert older.history is None
    exported["assistant"]["history"] = "lots"
    with pytest.raises(InvalidInput, match="must be a whole number"):
        import_assistant(core, TERMINAL, json.dumps(exported).encode(), name="bad")


def test_a_database_from_before_the_setting_keeps_every_turn(tmp_path):
    from sqlite_utils import Database

    from storage.db import migrations, open_db

    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m007_assistant_history")
    old.execute(
        "INSERT INTO assistants (id, name, name_key, scope, owner_id, instructions, visibility, "
        "model, k, selector, temperature, created_at, updated_at) VALUES (1, 'a', 'a', 'user:1', "
        "'1', 'Answer.', 'private', 'local:x', 3, 'mmr', 0.7, 'now', 'now')"
    )
    old.conn.commit()
    old.conn.close()
    db = open_db(path)
    assert db.execute("SELECT history FROM assistants").fetchall() == [(None,)]
    db.execute("UPDATE assistants SET history = 2")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_the_demo_stands_each_number_alone_at_temperature_0(core):
    demo = install_demo(core, TERMINAL)
    assert (demo.history, demo.temperature) == (0, 0.0)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_sets_and_shows_the_history(cli):
    def shown() -> object:
        result = cli("assistant", "show", "helper", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["history"]

    created = cli("assistant", "create", "helper", "--instructions", "Answer.", "--history", "2")
    assert created.exit_code == 0, created.output
    assert shown() == 2
    assert "  history: 2" in cli("assistant", "show", "helper").stdout
    assert cli("assistant", "edit", "helper", "--history", "0").exit_code == 0
    assert shown() == 0
    assert cli("assistant", "edit", "helper", "--history", "all").exit_code == 0
    assert shown() is None
    assert "  history: all" in cli("assistant", "show", "helper").stdout
    assert cli("assistant", "create", "plain", "--instructions", "Answer.").exit_code == 0
    assert json.loads(cli("assistant", "show", "plain", "--json").stdout)["history"] is None


@pytest.mark.parametrize("bad", ["-1", "two", "2.5"])
def test_cli_refuses_a_bad_history_in_one_line(cli, bad):
    assert cli("assistant", "create", "helper", "--instructions", "Answer.").exit_code == 0
    for args in (
        ("assistant", "create", "other", "--instructions", "Answer.", f"--history={bad}"),
        ("assistant", "edit", "helper", f"--history={bad}"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [
            f"Error: history (earlier exchanges in each prompt) must be a whole number from 0 "
            f"to {MAX_HISTORY}, or all."
        ]
    assert json.loads(cli("assistant", "show", "helper", "--json").stdout)["history"] is None


# -- Discord -----------------------------------------------------------------------------------

HISTORY_LABEL = "History: earlier exchanges in each prompt"


def modal_values(opened) -> dict[str, str]:
    return {
        row.get("label") or row["components"][0]["label"]: (
            row.get("component") or row["components"][0]
        ).get("value")
        for row in opened.modal["components"]
    }


async def test_discord_create_and_edit_set_the_history_and_show_shows_it(world: World):
    w = world
    opened = await w.fake.slash("assistant", "create", user=w.alice, channel=w.channel)
    await w.fake.answered(opened)
    assert HISTORY_LABEL in modal_labels(opened)
    created = await w.fake.submit_modal(
        opened, {"Name": "poet", "Instructions": "You write haiku.", HISTORY_LABEL: "2"}
    )
    await w.fake.answered(created)
    assert "Created" in created.text(), created.text()
    assert w.core.assistants.get(w.bot_actor(w.alice), "poet").history == 2

    shown = await w.fake.slash(
        "assistant", "show", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(shown)
    fields = {f["name"]: f["value"] for f in shown.original.embeds[0]["fields"]}
    assert fields["History"] == "2"

    editing = await w.fake.slash(
        "assistant", "edit", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(editing)
    assert modal_values(editing)[HISTORY_LABEL] == "2"  # the modal shows the current setting
    saved = await w.fake.submit_modal(editing, {HISTORY_LABEL: "0"})
    await w.fake.answered(saved)
    assert "version 2" in saved.text(), saved.text()
    assert w.core.assistants.get(w.bot_actor(w.alice), "poet").history == 0


async def test_discord_a_bad_history_is_one_sentence_and_changes_nothing(world: World):
    w = world
    await create_assistant(w, w.alice, "poet")
    assert w.core.assistants.get(w.bot_actor(w.alice), "poet").history is None
    editing = await w.fake.slash(
        "assistant", "edit", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(editing)
    assert modal_values(editing)[HISTORY_LABEL] == "all"
    refused = await w.fake.submit_modal(editing, {HISTORY_LABEL: "-3"})
    await w.fake.answered(refused)
    assert refused.text() == (
        "history (earlier exchanges in each prompt) must be a whole number from 0 to "
        f"{MAX_HISTORY}, or all."
    )
    assert w.core.assistants.get(w.bot_actor(w.alice), "poet").version == 1
