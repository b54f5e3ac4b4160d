"""Answering from knowledge: each message's most relevant chunks (the assistant's own, above
min_score) go into the system message with numbered source markers, inside the budget (history
trimmed first, then examples, then knowledge); the stored reply keeps the chunk ids, the reply
carries its sources, `fewtune ask` and `fewtune chat` show them, and a training chat built from
a conversation keeps the chunks it was answered with. Real core, chromadb, fake model on HTTP."""

from __future__ import annotations

import json

import pytest
from fake_model import FakeModel
from test_dataset import converse

from assistants import TERMINAL, Actor, Core, sources_line
from assistants.prompt import KNOWLEDGE_HEADER, build_prompt

GUIDE = b"""# Opening hours
The shop opens at nine in the morning and closes at five in the afternoon.

# Refunds
Refunds are given within thirty days when the receipt is shown.
"""
OTHER = b"# Rockets\nThe rocket engine burns liquid oxygen and kerosene.\n"
REFUND_QUESTION = "when can I get my money back?"


class CountingIndex:
    """Counts how often the message path opens the knowledge index (a real one behind it)."""

    def __init__(self, core: Core) -> None:
        self.opened = 0
        self._real = core.knowledge_index
        core.held_knowledge.index = self

    def __call__(self):
        self.opened += 1
        return self._real()


def open_core(home, embedder, toml: str = "") -> Core:
    (home / "fewtune.toml").write_text(toml, encoding="utf-8")
    core = Core.open(home, embedder=embedder)
    core.assistants.create(TERMINAL, "helper", "Answer from the files.", k=0)
    return core


@pytest.fixture
def helper(fewtune_home, embedder):
    core = open_core(fewtune_home, embedder)
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    yield core
    core.close()


def test_the_best_chunks_go_into_the_system_message_with_markers(helper):
    core = helper
    core.assistants.create(TERMINAL, "rocketry", "Answer about rockets.", k=0)
    core.knowledge.add(TERMINAL, "rocketry", [("rockets.md", OTHER)])
    assistant = core.assistants.get(TERMINAL, "helper")
    composed = core.chat.compose(assistant, [], REFUND_QUESTION)
    system = composed.messages[0]["content"]
    assert system.startswith("Answer from the files." + KNOWLEDGE_HEADER)
    assert "[1] guide.md, Refunds\nRefunds\nRefunds are given within thirty days" in system
    assert "cite each one you use by its number, like [1]" in system
    # Only the assistant's own knowledge, best first, numbered as quoted.
    assert "rocket" not in system.lower()
    assert [s.number for s in composed.sources] == list(range(1, len(composed.sources) + 1))
    assert (composed.sources[0].file, composed.sources[0].location) == ("guide.md", "Refunds")
    assert all(s.score is not None and s.score >= 0.3 for s in composed.sources)
    assert composed.messages[-1] == {"role": "user", "content": REFUND_QUESTION}
    assert sources_line(composed.sources).startswith("Sources: [1] guide.md, Refunds")


def test_chunks_below_min_score_stay_out_and_the_prompt_is_as_without_knowledge(
    fewtune_home, embedder
):
    core = open_core(fewtune_home, embedder, "[knowledge]\nmin_score = 0.99\n")
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    composed = core.chat.compose(core.assistants.get(TERMINAL, "helper"), [], REFUND_QUESTION)
    assert composed.sources == []
    assert composed.messages == [
        {"role": "system", "content": "Answer from the files."},
        {"role": "user", "content": REFUND_QUESTION},
    ]
    core.close()


def test_knowledge_k_caps_the_chunks(fewtune_home, embedder):
    core = open_core(fewtune_home, embedder, "[knowledge]\nknowledge_k = 1\nmin_score = 0.0\n")
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])  # two chunks
    composed = core.chat.compose(core.assistants.get(TERMINAL, "helper"), [], REFUND_QUESTION)
    assert [(s.number, s.location) for s in composed.sources] == [(1, "Refunds")]
    assert "[2]" not in composed.messages[0]["content"]
    core.close()


def test_an_assistant_without_knowledge_makes_no_knowledge_query(fewtune_home, embedder):
    core = open_core(fewtune_home, embedder)
    counting = CountingIndex(core)
    assistant = core.assistants.get(TERMINAL, "helper")
    composed = core.chat.compose(assistant, [], REFUND_QUESTION)
    assert counting.opened == 0 and composed.sources == []
    assert composed.messages[0] == {"role": "system", "content": "Answer from the files."}
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    assert core.chat.compose(assistant, [], REFUND_QUESTION).sources
    assert counting.opened > 0
    core.close()


def test_the_budget_trims_history_then_examples_then_knowledge_and_records_it():
    history = [
        {"role": "user", "content": "an earlier question " * 5},
        {"role": "assistant", "content": "an earlier answer " * 5},
    ] * 2
    examples = [
        (1, [{"role": "user", "content": "q1 " * 20}, {"role": "assistant", "content": "a1"}]),
        (2, [{"role": "user", "content": "q2 " * 20}, {"role": "assistant", "content": "a2"}]),
    ]
    knowledge = [(10, "guide.md, Refunds", "refund text " * 10), (11, "guide.md", "more " * 10)]
    full = build_prompt("Answer.", examples, history, "hi", 100_000, knowledge=knowledge)
    assert full.trimmed == {} and full.knowledge_ids == [10, 11]
    seen = set()
    for budget in range(full.estimated_tokens, 0, -1):
        try:
            prompt = build_prompt("Answer.", examples, history, "hi", budget, knowledge=knowledge)
        except ValueError:
            break  # instructions and message alone no longer fit
        assert prompt.estimated_tokens <= budget
        dropped = prompt.trimmed
        if dropped.get("examples") or dropped.get("knowledge"):
            assert dropped.get("history_messages") == len(history), dropped
        if dropped.get("knowledge"):
            assert dropped.get("examples") == len(examples), dropped
        assert prompt.knowledge_ids == [10, 11][: 2 - dropped.get("knowledge", 0)]
        system = prompt.messages[0]["content"]
        assert ("[1] guide.md, Refunds" in system) == (10 in prompt.knowledge_ids)
        assert "[2] guide.md\n" not in system or 11 in prompt.knowledge_ids
        seen.add(tuple(sorted(dropped.items())))
    assert (("examples", 2), ("history_messages", 4), ("knowledge", 1)) in seen
    assert (("examples", 2), ("history_messages", 4), ("knowledge", 2)) in seen
    assert (("examples", 1), ("history_messages", 4)) in seen


def test_compose_records_knowledge_trimmed_by_a_small_context(fewtune_home, embedder):
    core = open_core(
        fewtune_home,
        embedder,
        "[chat]\ncontext_tokens = 80\nreply_tokens = 10\n[knowledge]\nmin_score = 0.0\n",
    )
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    composed = core.chat.compose(core.assistants.get(TERMINAL, "helper"), [], REFUND_QUESTION)
    assert composed.trimmed.get("knowledge", 0) >= 1
    assert len(composed.sources) == 2 - composed.trimmed["knowledge"]
    core.close()


def with_fake_model(home, embedder, model: FakeModel) -> Core:
    core = open_core(
        home,
        embedder,
        f'[providers.scripted]\nbase_url = "{model.base_url}"\nmax_retries = 0\n',
    )
    core.assistants.edit(TERMINAL, "helper", model="scripted:any")
    core.knowledge.add(TERMINAL, "helper", [("guide.md", GUIDE)])
    return core


async def test_the_stored_reply_keeps_its_chunk_ids_and_the_reply_carries_sources(
    fewtune_home, embedder
):
    with FakeModel() as model:
        model.enqueue(["Within thirty days [1]."])
        core = with_fake_model(fewtune_home, embedder, model)
        reply = await core.chat.ask(TERMINAL, "helper", REFUND_QUESTION)
        await core.providers.close()
    assert reply.text == "Within thirty days [1]."
    assert (reply.sources[0].number, reply.sources[0].file) == (1, "guide.md")
    sent = model.history[0]["messages"][0]["content"]
    assert "[1] guide.md, Refunds" in sent
    row = core.db.execute(
        "SELECT knowledge_used FROM messages WHERE id = ?", [reply.message_id]
    ).fetchone()
    used = json.loads(row[0])
    assert [u["id"] for u in used] == [s.chunk_id for s in reply.sources]
    assert used[0]["score"] == pytest.approx(reply.sources[0].score)
    chunk = core.db.execute(
        "SELECT location FROM knowledge_chunks WHERE id = ?", [used[0]["id"]]
    ).fetchone()
    assert chunk[0] == "Refunds"
    core.close()


async def test_a_reply_without_knowledge_stores_an_empty_list(fewtune_home, embedder):
    with FakeModel() as model:
        core = open_core(
            fewtune_home, embedder, f'[providers.scripted]\nbase_url = "{model.base_url}"\n'
        )
        core.assistants.edit(TERMINAL, "helper", model="scripted:any")
        reply = await core.chat.ask(TERMINAL, "helper", "hello")
        await core.providers.close()
    assert reply.sources == []
    row = core.db.execute(
        "SELECT knowledge_used FROM messages WHERE id = ?", [reply.message_id]
    ).fetchone()
    assert json.loads(row[0]) == []
    core.close()


def test_fewtune_ask_and_chat_show_the_sources(fewtune_home, embedder, cli):
    with FakeModel() as model:
        model.reply = "Within thirty days [1]."
        with_fake_model(fewtune_home, embedder, model).close()
        asked = cli("ask", "helper", REFUND_QUESTION)
        as_json = cli("ask", "helper", REFUND_QUESTION, "--json")
        chatted = cli("chat", "helper", input=f"{REFUND_QUESTION}\n/exit\n")
    assert asked.exit_code == 0, asked.output
    lines = asked.stdout.strip().splitlines()
    assert lines[0] == "Within thirty days [1]."
    assert lines[1].startswith("Sources: [1] guide.md, Refunds")
    sources = json.loads(as_json.stdout)["sources"]
    assert sources[0]["number"] == 1 and sources[0]["file"] == "guide.md"
    assert sources[0]["location"] == "Refunds" and isinstance(sources[0]["chunk_id"], int)
    assert "text" not in sources[0]
    assert chatted.exit_code == 0, chatted.output
    assert "  Sources: [1] guide.md, Refunds" in chatted.stdout
    assert chatted.stdout.count("Sources: ") == 1


def test_a_training_chat_keeps_the_chunks_its_answer_was_given(fewtune_home, embedder):
    owner = Actor("owner")
    (fewtune_home / "fewtune.toml").write_text("", encoding="utf-8")
    core = Core.open(fewtune_home, embedder=embedder)
    core.assistants.create(owner, "helper", "Answer from the files.", k=0)
    core.knowledge.add(owner, "helper", [("guide.md", GUIDE)])
    converse(core, owner, "helper", [(REFUND_QUESTION, "Within thirty days [1].")])
    stored = core.db.execute(
        "SELECT knowledge_used FROM messages WHERE role = 'assistant'"
    ).fetchone()
    given = [u["id"] for u in json.loads(stored[0])]
    # A file added later answers the question better; the training chat still holds what the
    # answer was given, not what a search would find now.
    later = b"# Money back\nWhen can I get my money back? Refunds: ask at the desk.\n"
    core.knowledge.add(owner, "helper", [("refunds.md", later)])
    assistant = core.assistants.get(owner, "helper")
    assert core.chat.compose(assistant, [], REFUND_QUESTION).sources[0].file == "refunds.md"
    _, data = core.promotions.dataset(owner, "helper")
    chats = [c["messages"] for c in [*data.train, *data.held_out]]
    assert len(chats) == 1
    messages = chats[0]
    served = core.chat.compose(assistant, [], REFUND_QUESTION, chunk_ids=given)
    assert messages[0] == served.messages[0]
    assert "[1] guide.md, Refunds" in messages[0]["content"]
    assert "refunds.md" not in messages[0]["content"]
    assert messages[1:] == [
        {"role": "user", "content": REFUND_QUESTION},
        {"role": "assistant", "content": "Within thirty days [1]."},
    ]
    core.close()
