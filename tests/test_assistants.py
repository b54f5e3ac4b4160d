"""Assistants: names, limits, settings, visibility, permissions, versions, delete cascade."""

from __future__ import annotations

import sqlite3

import pytest

from assistants import (
    TERMINAL,
    Actor,
    AlreadyExists,
    Core,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from assistants.assistant import MAX_INSTRUCTIONS, can_manage, is_visible

OWNER = Actor("u1", "g1")
MEMBER = Actor("u2", "g1")
MODERATOR = Actor("u3", "g1", can_manage_guild=True)
STRANGER = Actor("u4", "g2")
OTHER_MODERATOR = Actor("u5", "g2", can_manage_guild=True)
DM_USER = Actor("u2")  # the member, in direct messages


def make(core: Core, name: str = "helper", actor: Actor = TERMINAL, **kwargs):
    return core.assistants.create(actor, name, "Answer briefly.", **kwargs)


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A" * 64, "my-bot_2", "0"])
def test_valid_names_are_accepted(core, name):
    assert make(core, name).name == name


@pytest.mark.parametrize("name", ["", "   ", "A" * 65, "my bot", "bot!", "héllo", "a/b", "a.b"])
def test_invalid_names_are_refused_with_the_rule(core, name):
    with pytest.raises(InvalidInput, match="1-64 letters, digits"):
        make(core, name)
    assert core.assistants.list(TERMINAL) == []


def test_names_are_unique_per_scope_case_insensitively(core):
    make(core, "Helper")
    with pytest.raises(AlreadyExists, match="already exists"):
        make(core, "hELPER")
    assert [a.name for a in core.assistants.list(TERMINAL)] == ["Helper"]
    assert core.assistants.get(TERMINAL, "HELPER").name == "Helper"


def test_the_same_name_is_allowed_in_another_scope(core):
    first = make(core, "helper", OWNER)
    second = make(core, "Helper", STRANGER)  # another guild
    third = make(core, "helper", TERMINAL)  # a user's own space
    assert len({first.id, second.id, third.id}) == 3
    with pytest.raises(AlreadyExists):
        make(core, "HELPER", MEMBER)  # same guild as the first, another user
    assert core.assistants.get(OWNER, "helper").id == first.id
    assert core.assistants.get(STRANGER, "helper").id == second.id


def test_renaming_onto_a_taken_name_is_refused_but_a_case_change_is_not(core):
    make(core, "alpha")
    make(core, "beta")
    with pytest.raises(AlreadyExists):
        core.assistants.edit(TERMINAL, "beta", name="ALPHA")
    assert core.assistants.edit(TERMINAL, "beta", name="Beta").name == "Beta"
    with pytest.raises(InvalidInput):
        core.assistants.edit(TERMINAL, "Beta", name="no spaces please")


# -- settings and limits -------------------------------------------------------------------------


def test_instructions_up_to_the_limit(core):
    full = core.assistants.create(TERMINAL, "full", "x" * MAX_INSTRUCTIONS)
    assert len(full.instructions) == MAX_INSTRUCTIONS == 32_000
    with pytest.raises(InvalidInput, match="32,000"):
        core.assistants.create(TERMINAL, "over", "x" * (MAX_INSTRUCTIONS + 1))
    with pytest.raises(InvalidInput, match="empty"):
        core.assistants.create(TERMINAL, "blank", "   ")
    with pytest.raises(InvalidInput, match="32,000"):
        core.assistants.edit(TERMINAL, "full", instructions="y" * 32_001)
    assert core.assistants.get(TERMINAL, "full").instructions == "x" * MAX_INSTRUCTIONS


def test_description_has_a_limit(core):
    assert make(core, "a", description="d" * 1000).description == "d" * 1000
    with pytest.raises(InvalidInput, match="description"):
        make(core, "b", description="d" * 1001)


def test_at_most_four_starters(core):
    made = make(core, "a", starters=["one", " ", "two", "three", "four"])
    assert made.starters == ["one", "two", "three", "four"]  # blanks dropped
    with pytest.raises(InvalidInput, match="at most 4"):
        make(core, "b", starters=["1", "2", "3", "4", "5"])
    with pytest.raises(InvalidInput, match="at most 4"):
        core.assistants.edit(TERMINAL, "a", starters=["1", "2", "3", "4", "5"])
    assert core.assistants.get(TERMINAL, "a").starters == ["one", "two", "three", "four"]


@pytest.mark.parametrize("k", [0, 4, 25])
def test_k_in_range(core, k):
    assert make(core, k=k).k == k


@pytest.mark.parametrize("k", [-1, 26, 2.5, True, "4"])
def test_k_out_of_range_is_refused(core, k):
    with pytest.raises(InvalidInput, match="0 to 25"):
        make(core, k=k)


def test_default_settings(core):
    made = make(core)
    assert (made.k, made.selector, made.visibility) == (4, "similarity", "private")
    assert made.model == core.settings.chat.default_model
    assert made.model.startswith("local:")
    assert make(core, "inguild", OWNER).visibility == "guild"


@pytest.mark.parametrize("selector", ["similarity", "mmr", "coverage", "random", "fixed"])
def test_selectors(core, selector):
    assert make(core, selector=selector).selector == selector


def test_unknown_selector_is_refused(core):
    with pytest.raises(InvalidInput, match="similarity, mmr, coverage, random, fixed"):
        make(core, selector="best")


def test_a_database_from_before_coverage_accepts_it_and_keeps_its_rows(tmp_path):
    from sqlite_utils import Database

    from storage.db import migrations, open_db

    path = tmp_path / "old.db"
    old = Database(path)
    old.execute("PRAGMA foreign_keys=ON")
    migrations.apply(old, stop_before="m006_coverage_selector")
    old.execute(
        "INSERT INTO assistants (id, name, name_key, scope, owner_id, instructions, visibility, "
        "model, k, selector, temperature, created_at, updated_at) VALUES (1, 'a', 'a', 'user:1', "
        "'1', 'Answer.', 'private', 'local:x', 3, 'mmr', 0.7, 'now', 'now')"
    )
    old.execute(
        "INSERT INTO examples (assistant_id, input, output, source, author_id, content_hash, "
        "created_at) VALUES (1, 'in', 'out', 'manual', '1', 'h', 'now')"
    )
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("UPDATE assistants SET selector = 'coverage'")
    old.conn.commit()
    old.conn.close()

    db = open_db(path)
    db.execute("UPDATE assistants SET selector = 'coverage'")
    assert db.execute("SELECT selector FROM assistants").fetchall() == [("coverage",)]
    assert db.execute("SELECT input FROM examples").fetchall() == [("in",)]
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE assistants SET selector = 'best'")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


@pytest.mark.parametrize("temperature", [0, 0.0, 1.3, 2])
def test_temperature_in_range(core, temperature):
    assert make(core, temperature=temperature).temperature == float(temperature)


@pytest.mark.parametrize("temperature", [-0.1, 2.01, True, "hot", float("nan")])
def test_temperature_out_of_range_is_refused(core, temperature):
    with pytest.raises(InvalidInput, match="temperature"):
        make(core, temperature=temperature)


@pytest.mark.parametrize("max_tokens", [0, 40_000, 1.5])
def test_max_tokens_out_of_range_is_refused(core, max_tokens):
    with pytest.raises(InvalidInput, match="max tokens"):
        make(core, max_tokens=max_tokens)


def test_visibility_must_be_known(core):
    with pytest.raises(InvalidInput, match="private, guild, public"):
        make(core, visibility="secret")


@pytest.mark.parametrize("model", ["local:SmolLM2-135M-Instruct", "openai:gpt-4o-mini"])
def test_models_of_known_providers(core, model):
    assert make(core, model=model).model == model


@pytest.mark.parametrize("model", ["gpt-4o", ":x", "local:", "lo cal:x"])
def test_models_not_of_the_form_provider_model_are_refused(core, model):
    with pytest.raises(InvalidInput, match="provider:model"):
        make(core, model=model)


def test_unknown_provider_is_refused_until_configured(fewtune_home, embedder):
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        with pytest.raises(InvalidInput, match="Unknown provider 'gpu'"):
            make(core, model="gpu:llama-3-8b")
    finally:
        core.close()
    (fewtune_home / "fewtune.toml").write_text(
        '[providers.gpu]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "GPU_TOKEN"\n'
    )
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        assert make(core, model="gpu:llama-3-8b").model == "gpu:llama-3-8b"
    finally:
        core.close()


def test_edit_refuses_unknown_settings(core):
    make(core)
    with pytest.raises(InvalidInput, match="'owner_id' is not a setting"):
        core.assistants.edit(TERMINAL, "helper", owner_id="u9")


# -- visibility and permissions ---------------------------------------------------------------


def test_private_assistant_is_seen_by_owner_and_guild_moderator_only(core):
    made = make(core, "secret", OWNER, visibility="private")
    assert is_visible(OWNER, made)
    assert is_visible(MODERATOR, made)  # Manage Server in its guild, to moderate
    for actor in (MEMBER, STRANGER, OTHER_MODERATOR, DM_USER):
        assert not is_visible(actor, made)
        with pytest.raises(NotFound):
            core.assistants.get(actor, "secret")


def test_guild_assistant_is_seen_in_its_guild_only(core):
    made = make(core, "team", OWNER, visibility="guild")
    for actor in (OWNER, MEMBER, MODERATOR):
        assert core.assistants.get(actor, "team").id == made.id
    for actor in (STRANGER, OTHER_MODERATOR, DM_USER):
        with pytest.raises(NotFound):
            core.assistants.get(actor, "team")


def test_public_assistant_is_seen_everywhere(core):
    made = make(core, "open", OWNER, visibility="public")
    for actor in (OWNER, MEMBER, MODERATOR, STRANGER, OTHER_MODERATOR, DM_USER, TERMINAL):
        assert core.assistants.get(actor, "open").id == made.id


def test_can_manage_owner_or_manage_server_of_that_guild_only(core):
    made = make(core, "team", OWNER, visibility="public")
    assert can_manage(OWNER, made)
    assert can_manage(Actor("u1"), made)  # the owner, in DMs
    assert can_manage(MODERATOR, made)
    assert not can_manage(MEMBER, made)
    assert not can_manage(STRANGER, made)
    assert not can_manage(OTHER_MODERATOR, made)  # Manage Server of another guild
    mine = make(core, "mine", TERMINAL, visibility="public")
    assert not can_manage(MODERATOR, mine)  # no guild: only its owner


def test_edit_and_delete_need_permission(core):
    make(core, "team", OWNER, visibility="public")
    for actor in (MEMBER, STRANGER, OTHER_MODERATOR):
        with pytest.raises(PermissionDenied, match="owner"):
            core.assistants.edit(actor, "team", k=7)
        with pytest.raises(PermissionDenied):
            core.assistants.delete(actor, "team")
        with pytest.raises(PermissionDenied):
            core.assistants.history(actor, "team")
    assert core.assistants.get(OWNER, "team").k == 4
    assert core.assistants.edit(MODERATOR, "team", k=7).k == 7
    assert core.assistants.delete(MODERATOR, "team").name == "team"
    with pytest.raises(NotFound):
        core.assistants.get(OWNER, "team")


def test_list_shows_only_visible_ones_sorted_by_name(core):
    make(core, "zeta", OWNER, visibility="private")
    make(core, "Beta", OWNER, visibility="guild")
    make(core, "alpha", OWNER, visibility="public")
    make(core, "elsewhere", STRANGER, visibility="guild")
    make(core, "mine", TERMINAL)

    def names(actor: Actor) -> list[str]:
        return [a.name for a in core.assistants.list(actor)]

    assert names(OWNER) == ["alpha", "Beta", "zeta"]
    assert names(MEMBER) == ["alpha", "Beta"]
    assert names(MODERATOR) == ["alpha", "Beta", "zeta"]
    assert names(STRANGER) == ["alpha", "elsewhere"]
    assert names(OTHER_MODERATOR) == ["alpha", "elsewhere"]
    assert names(DM_USER) == ["alpha"]
    assert names(TERMINAL) == ["alpha", "mine"]


def test_complete_gives_at_most_25_prefix_matches_first(core):
    for name in ("robot", "bother", "about"):
        make(core, name)
    assert core.assistants.complete(TERMINAL, "BO") == ["bother", "about", "robot"]
    for i in range(30):
        make(core, f"bot{i:02d}")
    assert len(core.assistants.complete(TERMINAL, "")) == 25
    assert core.assistants.complete(TERMINAL, "bot2")[:2] == ["bot20", "bot21"]
    assert core.assistants.complete(STRANGER, "") == []


# -- versions ----------------------------------------------------------------------------------


def test_every_change_is_a_version_and_can_be_restored(core):
    make(core, "helper", k=4, description="first")
    core.assistants.edit(TERMINAL, "helper", k=8, instructions="Answer at length.")
    core.assistants.edit(TERMINAL, "helper", selector="mmr", name="Helper2")
    unchanged = core.assistants.edit(TERMINAL, "Helper2", k=8)  # no change: no new version
    assert unchanged.version == 3
    history = core.assistants.history(TERMINAL, "helper2")
    assert [(v["version"], v["change"]) for v in history] == [
        (1, "create"),
        (2, "edit"),
        (3, "edit"),
    ]
    assert history[1]["snapshot"]["k"] == 8
    assert history[0]["changed_by"] == TERMINAL.user_id

    restored = core.assistants.restore(TERMINAL, "helper2", 1)
    assert restored.version == 4
    assert (restored.name, restored.k, restored.selector) == ("helper", 4, "similarity")
    assert restored.instructions == "Answer briefly."
    assert restored.description == "first"
    assert core.assistants.history(TERMINAL, "helper")[-1]["change"] == "restore 1"
    with pytest.raises(NotFound, match="no version 9"):
        core.assistants.restore(TERMINAL, "helper", 9)


def test_restore_does_not_take_a_name_now_used_by_another(core):
    make(core, "old")
    core.assistants.edit(TERMINAL, "old", name="new")
    make(core, "old")
    with pytest.raises(AlreadyExists):
        core.assistants.restore(TERMINAL, "new", 1)
    assert core.assistants.get(TERMINAL, "new").version == 2


# -- delete ------------------------------------------------------------------------------------


def table_count(core: Core, table: str, where: str = "1", params: list | None = None) -> int:
    return core.db.execute(f"SELECT count(*) FROM {table} WHERE {where}", params or []).fetchone()[
        0
    ]


def test_delete_cascades_and_drops_the_index_collection(core):
    gone = make(core, "gone", k=2)
    kept = make(core, "kept", k=2)
    for name in ("gone", "kept"):
        core.examples.add(TERMINAL, name, "what is two plus two", "4")
        core.examples.add(TERMINAL, name, "what is three plus three", "6")
        conversation = core.chat.start(TERMINAL, name)
        prepared = core.chat.prepare(TERMINAL, conversation.id, "what is one plus one")
        core.chat.record(prepared, TERMINAL, {"content": "2", "model": "local:x"})
    index = core.index()
    assert index.count(gone.id) == 2
    collections = {c.name for c in index.client.list_collections()}
    assert f"assistant-{gone.id}" in collections

    core.assistants.delete(TERMINAL, "gone")

    for table, column in (
        ("examples", "assistant_id"),
        ("conversations", "assistant_id"),
        ("assistant_versions", "assistant_id"),
    ):
        assert table_count(core, table, f"{column} = ?", [gone.id]) == 0
        assert table_count(core, table, f"{column} = ?", [kept.id]) > 0
    assert table_count(core, "messages") == 2  # only the kept assistant's two messages remain
    collections = {c.name for c in index.client.list_collections()}
    assert f"assistant-{gone.id}" not in collections
    assert f"assistant-{kept.id}" in collections
    assert index.count(kept.id) == 2
    with pytest.raises(NotFound):
        core.examples.list(TERMINAL, "gone")
