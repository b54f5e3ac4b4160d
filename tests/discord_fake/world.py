"""The world of a Discord end-to-end test: a FakeDiscord with two guilds and users, the real
bot connected to it, a real Core in the test's FEWTUNE_HOME, and the fake model answering.
A pytest plugin (tests/conftest.py names it): test files take `world`, `model` and `serve_url`
as parameters."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from fake_model import FakeModel

from .harness import SERVE_TOKEN_ENV, running_bot, write_provider_settings
from .records import MANAGE_GUILD, Channel, Guild, Interaction, Message, User
from .server import FakeDiscord


@dataclass
class World:
    fake: FakeDiscord
    bot: Any
    core: Any
    model: FakeModel
    owner: User
    alice: User
    bob: User
    manager: User
    guild: Guild
    channel: Channel
    other_guild: Guild
    other_channel: Channel

    def bot_actor(self, user: User, guild: Guild | None = None) -> Any:
        """The core Actor the bot makes for `user` in `guild` (default: the first guild)."""
        from assistants import Actor

        guild = guild or self.guild
        return Actor(str(user.id), str(guild.id), bool(guild.permissions_of(user) & MANAGE_GUILD))


@pytest.fixture
def model():
    """The fake model (tests/fake_model.py): echoes, or answers what a test queued."""
    with FakeModel() as fake:
        yield fake


@pytest.fixture
def serve_url(model):
    """Provider `fewtune`'s /v1 URL: the fake model here; a test module that needs the real
    `fewtune serve` overrides this fixture (its bearer token is $FEWTUNE_TEST_SERVE_TOKEN)."""
    os.environ.setdefault(SERVE_TOKEN_ENV, secrets.token_urlsafe(16))
    return model.base_url


@pytest.fixture
async def world(fewtune_home, embedder, model, serve_url):
    from assistants import Core

    write_provider_settings(fewtune_home, serve_url, model)
    core = Core.open(fewtune_home, embedder=embedder)
    # Load the embedder and open the index now, so the first answer is not the slow one.
    await asyncio.to_thread(lambda: core.index().embedder.embed_one("warm up"))
    async with FakeDiscord() as fake:
        owner = fake.add_user("olivia")
        alice, bob, manager = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("max")
        guild = fake.add_guild("Guild One", owner)
        for user in (alice, bob):
            fake.add_member(guild, user)
        fake.add_member(guild, manager, manage_guild=True)
        other = fake.add_guild("Guild Two", bob)
        fake.add_member(other, alice)
        async with running_bot(fake, core, stream_interval=0.2) as bot:
            yield World(
                fake,
                bot,
                core,
                model,
                owner,
                alice,
                bob,
                manager,
                guild,
                fake.channel(guild),
                other,
                fake.channel(other),
            )
        # A handler's last core call (e.g. linking the thread it just opened) may still run in
        # a worker thread: let it finish before the database closes under it (a segfault).
        await asyncio.get_running_loop().shutdown_default_executor()
    await core.providers.close()
    core.close()


async def create_assistant(w: World, user: User, name: str, *, channel=None, **fields) -> None:
    channel = channel or w.channel
    opened = await w.fake.slash(
        "assistant",
        "create",
        user=user,
        channel=channel,
        options={k: v for k, v in fields.items() if k in ("visibility", "layout")},
    )
    await w.fake.answered(opened)
    values = {"Name": name, "Instructions": fields.get("instructions", "Answer briefly.")}
    if "description" in fields:
        values["Description"] = fields["description"]
    if "starters" in fields:
        values[next(k for k in modal_labels(opened) if k.startswith("Conversation"))] = fields[
            "starters"
        ]
    submitted = await w.fake.submit_modal(opened, values)
    await w.fake.answered(submitted)
    assert "Created" in submitted.text(), submitted.text()


def modal_labels(ix) -> list[str]:
    labels = []
    for row in ix.modal["components"]:
        labels.append(row.get("label") or row["components"][0].get("label"))
    return labels


def stored_messages(core, user: User) -> list[dict]:
    return list(
        core.db.query("SELECT * FROM messages WHERE user_id = ? ORDER BY id", [str(user.id)])
    )


async def wait_answer(w: World, ix: Interaction) -> Interaction:
    """Wait for a complete chat answer: its feedback buttons are added last, then (for /chat in
    a channel) the thread for follow-ups is opened."""
    await w.fake.wait_until(
        lambda: any(m.buttons() for m in ix.messages()) or "⚠️" in ix.text(),
        what=f"a complete answer to {ix.data.get('name') or ix.data.get('custom_id')}",
    )
    if ix.channel.type == 0 and ix.original is not None:
        await w.fake.wait_until(lambda: ix.original.thread, what="the thread on the answer")
    return ix


async def run(w: World, *args: Any, **kwargs: Any) -> Interaction:
    """Send a slash command (FakeDiscord.slash's arguments) and wait until it is answered."""
    ix = await w.fake.slash(*args, **kwargs)
    await w.fake.answered(ix)
    return ix


async def bind(w: World, name: str = "helper") -> None:
    """The manager binds the guild's channel to assistant `name` (`/assistant use`)."""
    await run(w, "assistant", "use", user=w.manager, channel=w.channel, options={"name": name})


async def answer_to(w: World, message: Message, what: str = "the answer") -> Message:
    """The bot's complete answer to a user's message: the reply to it, once its buttons are on."""
    answer = await w.fake.wait_until(
        lambda: next(
            (m for m in w.fake.bot_messages(message.channel) if m.reference is message), None
        ),
        what=what,
    )
    await w.fake.wait_until(lambda: answer.buttons(), what=f"{what}, complete")
    return answer


def use_scripted(w: World, name: str, owner: User) -> None:
    """Make assistant `name` answer from provider `scripted`, the fake model (w.model)."""
    w.core.assistants.edit(w.bot_actor(owner), name, model="scripted:echo")


def conversation_of(core: Any, text: str) -> int:
    """The conversation holding the user message `text`."""
    rows = list(core.db.query("SELECT conversation_id FROM messages WHERE content = ?", [text]))
    assert rows, f"no stored message {text!r}"
    return rows[0]["conversation_id"]
