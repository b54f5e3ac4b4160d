"""Discord end to end with the Chroma server gone mid-session: `/chat` and a mention both answer
with the index's one sentence (it is a FewtuneError like every user-facing error), never
"Something went wrong" or silence."""

from __future__ import annotations

import pytest
from discord_fake.world import World, bind, create_assistant

from bot.discord.replies import UNEXPECTED

UNAVAILABLE = "is unavailable"


@pytest.fixture
def chroma_url(chroma_server, monkeypatch):
    """The bot's index is the Chroma server (requested before `world`, which opens the core)."""
    url, process = chroma_server
    monkeypatch.setenv("FEWTUNE_CHROMA_URL", url)
    return url, process


def stop(process) -> None:
    process.terminate()
    process.wait(timeout=10)


async def helper_with_an_example(w: World) -> None:
    """An assistant whose prompt needs the index (an example to select), made while it is up."""
    await create_assistant(w, w.alice, "helper")
    w.core.examples.add(w.bot_actor(w.alice), "helper", "hello", "hi there")


async def test_chat_with_the_chroma_server_down_says_the_index_is_unavailable(
    chroma_url, world: World
):
    w = world
    url, process = chroma_url
    assert w.core.settings.index.chroma_url == url
    await helper_with_an_example(w)
    stop(process)
    ix = await w.fake.slash(
        "chat", user=w.bob, channel=w.channel, options={"assistant": "helper", "message": "hey"}
    )
    await w.fake.wait_until(lambda: UNAVAILABLE in ix.text(), 30, "the index's sentence")
    assert "The example index at" in ix.text() and UNEXPECTED not in ix.text()
    assert ix.ephemeral, "refused before answering: the user alone is told"


async def test_a_mention_with_the_chroma_server_down_gets_the_sentence_as_its_reply(
    chroma_url, world: World
):
    w = world
    _, process = chroma_url
    await helper_with_an_example(w)
    await bind(w)
    stop(process)
    asked = await w.fake.user_message(w.channel, w.bob, "hey there", mention_bot=True)
    reply = await w.fake.wait_until(
        lambda: next((m for m in w.fake.bot_messages(w.channel) if m.reference is asked), None),
        30,
        "the reply to the mention",
    )
    assert "The example index at" in reply.content and UNAVAILABLE in reply.content
    assert UNEXPECTED not in reply.content
