"""The `layout` setting: how an assistant's examples sit in the prompt (turns, one block in the
system message, Input:/Output: pairs with the message), read from the messages built; the budget
in every layout; training chats in every layout; and the setting through every door: validation,
the CLI, Discord's options, export/import, versions, the migration, the demo."""

from __future__ import annotations

import json

import pytest
from discord_fake.world import World, create_assistant

from assistants import TERMINAL, Actor, InvalidInput
from assistants.assistant import DEFAULT_LAYOUT
from assistants.demo import demo_files, install_demo
from assistants.prompt import LAYOUTS, build_prompt, estimate_tokens, messages_tokens
from assistants.transfer import export_assistant, import_assistant
from training.trainer.chat_data import validate_chat_jsonl


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def example(question: str, answer: str) -> list[dict[str, str]]:
    return [turn("user", question), turn("assistant", answer)]


EXAMPLES = [(11, example("onze", "11")), (12, example("douze", "12")), (13, example("dix", "10"))]
HISTORY = [turn("user", "un"), turn("assistant", "1")]
BLOCK = "Input: dix\nOutput: 10\n\nInput: douze\nOutput: 12\n\nInput: onze\nOutput: 11"

# -- the messages ------------------------------------------------------------------------------


EXPECTED = {
    "turns": [
        turn("system", "Digits."),
        *example("dix", "10"),
        *example("douze", "12"),
        *example("onze", "11"),
        *HISTORY,
        turn("user", "treize"),
    ],
    "system": [
        turn("system", f"Digits.\n\nExamples:\n{BLOCK}"),
        *HISTORY,
        turn("user", "treize"),
    ],
    "pairs": [
        turn("system", "Digits."),
        *HISTORY,
        turn("user", f"{BLOCK}\n\nInput: treize\nOutput:"),
    ],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_builds_exactly_its_messages_best_example_last(layout):
    prompt = build_prompt("Digits.", EXAMPLES, HISTORY, "treize", 10_000, layout=layout)
    assert prompt.messages == EXPECTED[layout]
    assert prompt.example_ids == [11, 12, 13]
    assert prompt.trimmed == {}
    assert prompt.estimated_tokens == messages_tokens(prompt.messages)


def test_best_first_turns_the_examples_round():
    prompt = build_prompt(
        "Digits.", EXAMPLES, [], "treize", 10_000, layout="pairs", best_first=True
    )
    assert prompt.messages[-1]["content"] == (
        "Input: onze\nOutput: 11\n\nInput: douze\nOutput: 12\n\nInput: dix\nOutput: 10"
        "\n\nInput: treize\nOutput:"
    )
    assert prompt.example_ids == [11, 12, 13]  # still best first: what was retrieved, in rank


def test_a_many_turn_example_is_laid_out_turn_by_turn():
    two = [(5, [*example("hello", "hi"), *example("seven", "7")])]
    prompt = build_prompt("Digits.", two, [], "eight", 10_000, layout="system")
    assert prompt.messages[0]["content"] == (
        "Digits.\n\nExamples:\nInput: hello\nOutput: hi\nInput: seven\nOutput: 7"
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_examples_every_layout_sends_the_instructions_and_the_message(layout):
    prompt = build_prompt("Digits.", [], HISTORY, "treize", 10_000, layout=layout)
    assert prompt.messages == [turn("system", "Digits."), *HISTORY, turn("user", "treize")]


# -- the budget --------------------------------------------------------------------------------


def full(layout: str) -> int:
    return build_prompt(
        "Digits.", EXAMPLES, HISTORY, "treize", 10_000, layout=layout
    ).estimated_tokens


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_budget_drops_history_first_then_the_least_relevant_examples(layout):
    budget = full(layout) - 1  # the history goes, every example stays
    prompt = build_prompt("Digits.", EXAMPLES, HISTORY, "treize", budget, layout=layout)
    assert prompt.trimmed == {"history_messages": 2}
    assert prompt.example_ids == [11, 12, 13]
    assert prompt.messages == [m for m in EXPECTED[layout] if m not in HISTORY]
    no_history = prompt.estimated_tokens
    assert no_history <= budget
    prompt = build_prompt("Digits.", EXAMPLES, HISTORY, "treize", no_history - 1, layout=layout)
    assert prompt.trimmed == {"history_messages": 2, "examples": 1}
    assert prompt.example_ids == [11, 12]  # "dix", the least relevant, went
    assert "dix" not in json.dumps(prompt.messages)
    assert prompt.estimated_tokens == messages_tokens(prompt.messages) <= no_history - 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_budget_for_the_message_alone_keeps_no_example(layout):
    budget = estimate_tokens("Digits.") + estimate_tokens("treize")
    prompt = build_prompt("Digits.", EXAMPLES, HISTORY, "treize", budget, layout=layout)
    assert prompt.messages == [turn("system", "Digits."), turn("user", "treize")]
    assert prompt.example_ids == []
    assert prompt.trimmed == {"history_messages": 2, "examples": 3}


def test_a_long_example_in_one_block_is_counted_whole():
    # 3,000 bytes in the block: about 1,000 tokens that must not slip past a 600-token budget.
    long = [(1, example("x" * 1500, "y" * 1500)), (2, example("short", "1"))]
    for layout in ("system", "pairs"):
        prompt = build_prompt("Digits.", long, [], "treize", 600, layout=layout)
        assert prompt.example_ids == []  # the best is dropped last, so both go
        assert prompt.estimated_tokens <= 600


# -- the setting -------------------------------------------------------------------------------


def test_new_assistants_get_the_default_and_a_bad_layout_is_one_sentence(core):
    assert core.assistants.create(TERMINAL, "plain", "Answer.").layout == DEFAULT_LAYOUT
    made = core.assistants.create(TERMINAL, "helper", "Answer.", layout="pairs")
    assert made.layout == "pairs"
    sentence = "The layout 'table' is not one: use turns, system, pairs."
    with pytest.raises(InvalidInput) as raised:
        core.assistants.create(TERMINAL, "other", "Answer.", layout="table")
    assert str(raised.value) == sentence
    with pytest.raises(InvalidInput) as raised:
        core.assistants.edit(TERMINAL, "helper", layout="table")
    assert str(raised.value) == sentence
    assert core.assistants.edit(TERMINAL, "helper", layout="system").layout == "system"
    assert core.assistants.get(TERMINAL, "helper").version == 2


async def test_the_core_sends_the_assistants_layout(core):
    core.assistants.create(TERMINAL, "numbers", "Digits.", k=2, layout="pairs")
    for word, digits in [("onze", "11"), ("douze", "12"), ("vingt", "20")]:
        core.examples.add(TERMINAL, "numbers", word, digits)
    assistant = core.assistants.get(TERMINAL, "numbers")
    composed = core.chat.compose(assistant, [], "treize")
    assert len(composed.messages) == 2 and len(composed.examples) == 2
    question = composed.messages[-1]["content"]
    assert question.endswith("\n\nInput: treize\nOutput:")
    best = composed.examples[0]
    assert (
        question.startswith("Input: ") and f"Input: {best.input}\nOutput: {best.output}" in question
    )


def test_restore_keeps_the_layout_of_its_version(core):
    core.assistants.create(TERMINAL, "helper", "Answer.", layout="pairs")
    core.assistants.edit(TERMINAL, "helper", layout="system")
    assert core.assistants.history(TERMINAL, "helper")[-1]["snapshot"]["layout"] == "system"
    assert core.assistants.restore(TERMINAL, "helper", 1).layout == "pairs"
    # A version recorded before the setting existed laid its examples out as turns.
    snapshot = json.dumps({"k": 4, "instructions": "Answer."})
    core.db.execute(
        "UPDATE assistant_versions SET snapshot = ? WHERE version = 2 AND assistant_id = ?",
        [snapshot, core.assistants.get(TERMINAL, "helper").id],
    )
    core.db.conn.commit()
    assert core.assistants.restore(TERMINAL, "helper", 2).layout == "turns"


def test_export_and_import_keep_the_layout(core):
    core.assistants.create(TERMINAL, "helper", "Answer.", layout="system")
    exported = export_assistant(core, TERMINAL, "helper")
    assert exported["assistant"]["layout"] == "system"
    copy, _ = import_assistant(core, TERMINAL, json.dumps(exported).encode(), name="copy")
    assert copy.layout == "system"
    # A file exported before the setting existed: turns, as its assistant was served.
    del exported["assistant"]["layout"]
    older, _ = import_assistant(core, TERMINAL, json.dumps(exported).encode(), name="older")
    assert older.layout == "turns"
    exported["assistant"]["layout"] = "grid"
    with pytest.raises(InvalidInput, match="is not one: use turns, system, pairs"):
        import_assistant(core, TERMINAL, json.dumps(exported).encode(), name="bad")


def test_a_database_from_before_the_setting_keeps_turns(tmp_path):
    from sqlite_utils import Database

    from storage.db import migrations, open_db

    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m008_assistant_layout")
    old.execute(
        "INSERT INTO assistants (id, name, name_key, scope, owner_id, instructions, visibility, "
        "model, k, selector, temperature, created_at, updated_at) VALUES (1, 'a', 'a', 'user:1', "
        "'1', 'Answer.', 'private', 'local:x', 3, 'mmr', 0.7, 'now', 'now')"
    )
    old.conn.commit()
    old.conn.close()
    db = open_db(path)
    assert db.execute("SELECT layout FROM assistants").fetchall() == [("turns",)]
    db.execute("UPDATE assistants SET layout = 'pairs'")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_the_demo_uses_the_layout_it_ships_with(core):
    definition, _ = demo_files()
    assert install_demo(core, TERMINAL).layout == definition["layout"] == DEFAULT_LAYOUT


# -- training chats ----------------------------------------------------------------------------

OWNER = Actor("owner")
WORDS = [("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6")]
WORDS += [("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("twenty-one", "21")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_training_chat_is_served_in_the_layout_and_never_holds_its_own_example(core, layout):
    core.assistants.create(OWNER, "numbers", "Write the number.", k=3, layout=layout)
    for word, digits in WORDS:
        core.examples.add(OWNER, "numbers", word, digits)
    assistant = core.assistants.get(OWNER, "numbers")
    rows = {e.input: e for e in core.examples.list(OWNER, "numbers")}
    _, data = core.promotions.dataset(OWNER, "numbers")
    assert data.stats["chats_with_examples"] == len(WORDS)
    for chat in [*data.train, *data.held_out]:
        messages = chat["messages"]
        own = rows[_asked(messages[-2]["content"])]
        composed = core.chat.compose(
            assistant,
            [],
            own.input,
            seed=own.id,
            exclude=frozenset(data.held_out_example_ids | {own.id}),
        )
        assert len(composed.examples) == 3
        served = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in composed.messages]
        assert messages == [*served, {"role": "assistant", "content": own.output}]
        text = "\n".join(m["content"] for m in messages[:-1])
        assert f"Input: {own.input}\nOutput: {own.output}" not in text
        if layout == "turns":  # weight-0 example turns exist only here
            assert sum(m.get("weight") == 0 for m in messages) == 3
            assert [m["content"] for m in messages].count(own.input) == 1
        else:
            assert len(messages) == 3 and not any("weight" in m for m in messages)
            assert text.count(f"Input: {own.input}\n") == (1 if layout == "pairs" else 0)
    for split in ("train", "held_out"):
        assert len(validate_chat_jsonl(data.jsonl(split).encode())) == len(getattr(data, split))


def _asked(question: str) -> str:
    """The message a training chat's question holds: the last Input of a `pairs` question."""
    if question.endswith("\nOutput:"):
        return question.removesuffix("\nOutput:").rsplit("Input: ", 1)[1]
    return question


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_sets_and_shows_the_layout_and_refuses_a_bad_one_in_one_line(cli):
    def shown(name: str = "helper") -> object:
        result = cli("assistant", "show", name, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["layout"]

    created = cli("assistant", "create", "helper", "--instructions", "Answer.", "--layout", "pairs")
    assert created.exit_code == 0, created.output
    assert shown() == "pairs"
    assert "  layout: pairs" in cli("assistant", "show", "helper").stdout
    assert cli("assistant", "edit", "helper", "--layout", "system").exit_code == 0
    assert shown() == "system"
    assert cli("assistant", "create", "plain", "--instructions", "Answer.").exit_code == 0
    assert shown("plain") == DEFAULT_LAYOUT
    for args in (
        ("assistant", "create", "other", "--instructions", "Answer.", "--layout", "table"),
        ("assistant", "edit", "helper", "--layout=table"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        assert "'table' is not one of 'turns', 'system', 'pairs'" in lines[0]
        assert result.stdout == ""
    assert shown() == "system"
    assert "layout" in cli("assistant", "edit", "--help").stdout


# -- Discord -----------------------------------------------------------------------------------


async def test_discord_create_and_edit_take_the_layout_and_show_shows_it(world: World):
    w = world
    await create_assistant(w, w.alice, "poet", layout="pairs")
    actor = w.bot_actor(w.alice)
    assert w.core.assistants.get(actor, "poet").layout == "pairs"
    shown = await w.fake.slash(
        "assistant", "show", user=w.alice, channel=w.channel, options={"name": "poet"}
    )
    await w.fake.answered(shown)
    fields = {f["name"]: f["value"] for f in shown.original.embeds[0]["fields"]}
    assert fields["Layout"] == "pairs"
    editing = await w.fake.slash(
        "assistant",
        "edit",
        user=w.alice,
        channel=w.channel,
        options={"name": "poet", "layout": "system"},
    )
    await w.fake.answered(editing)
    saved = await w.fake.submit_modal(editing, {})
    await w.fake.answered(saved)
    assert "version 2" in saved.text(), saved.text()
    assert w.core.assistants.get(actor, "poet").layout == "system"
    edit = next(
        o
        for c in w.fake.commands[None]
        if c["name"] == "assistant"
        for o in c["options"]
        if o["name"] == "edit"
    )
    layout = next(o for o in edit["options"] if o["name"] == "layout")
    assert [c["value"] for c in layout["choices"]] == list(LAYOUTS)
