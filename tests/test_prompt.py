"""The prompt: order, the token budget (history first, then examples) and what is recorded."""

from __future__ import annotations

import json

import pytest

from assistants import TERMINAL, Core, InvalidInput
from assistants.prompt import PromptTooLong, build_prompt, estimate_tokens, messages_tokens


def turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


EXAMPLES = [
    (11, turns("best q", "best a")),
    (12, turns("second q", "second a")),
    (13, turns("third q", "third a")),
]
HISTORY = [
    {"role": "user", "content": "old question " * 5},
    {"role": "assistant", "content": "old answer " * 5},
    {"role": "user", "content": "recent question"},
    {"role": "assistant", "content": "recent answer"},
]


def full_cost() -> int:
    return (
        estimate_tokens("sys")
        + estimate_tokens("now?")
        + sum(messages_tokens(t) for _, t in EXAMPLES)
        + messages_tokens(HISTORY)
    )


def test_order_is_system_examples_best_last_history_message():
    prompt = build_prompt("sys", EXAMPLES, HISTORY, "now?", budget=10_000)
    contents = [m["content"] for m in prompt.messages]
    assert contents == [
        "sys",
        "third q",
        "third a",
        "second q",
        "second a",
        "best q",
        "best a",
        *[m["content"] for m in HISTORY],
        "now?",
    ]
    assert [m["role"] for m in prompt.messages][0] == "system"
    assert prompt.messages[-1] == {"role": "user", "content": "now?"}
    assert prompt.example_ids == [11, 12, 13]
    assert prompt.trimmed == {}
    assert prompt.estimated_tokens == full_cost()


def test_estimates_count_bytes_so_other_scripts_are_not_undercounted():
    assert estimate_tokens("四十二") > estimate_tokens("abc")
    assert estimate_tokens("") == 4


def test_budget_trims_history_oldest_first_before_any_example():
    oldest_pair = messages_tokens(HISTORY[:2])
    prompt = build_prompt("sys", EXAMPLES, HISTORY, "now?", budget=full_cost() - oldest_pair)
    assert prompt.trimmed == {"history_messages": 2}
    assert prompt.example_ids == [11, 12, 13]
    assert [m["content"] for m in prompt.messages[-3:]] == [
        "recent question",
        "recent answer",
        "now?",
    ]
    assert prompt.estimated_tokens <= full_cost() - oldest_pair


def test_trimmed_history_starts_with_a_user_turn():
    # One token short of fitting: dropping the oldest message alone would fit, but would leave
    # an assistant turn first, answering a question the model no longer sees.
    prompt = build_prompt("sys", EXAMPLES, HISTORY, "now?", budget=full_cost() - 1)
    assert prompt.trimmed == {"history_messages": 2}
    after_examples = prompt.messages[1 + 2 * len(EXAMPLES)]
    assert after_examples == {"role": "user", "content": "recent question"}


def test_then_examples_least_relevant_first():
    budget = full_cost() - messages_tokens(HISTORY) - messages_tokens(EXAMPLES[2][1])
    prompt = build_prompt("sys", EXAMPLES, HISTORY, "now?", budget=budget)
    assert prompt.trimmed == {"history_messages": 4, "examples": 1}
    assert prompt.example_ids == [11, 12]
    assert [m["content"] for m in prompt.messages] == [
        "sys",
        "second q",
        "second a",
        "best q",
        "best a",
        "now?",
    ]
    tight = build_prompt("sys", EXAMPLES, HISTORY, "now?", budget=estimate_tokens("sys") + 8)
    assert tight.trimmed == {"history_messages": 4, "examples": 3}
    assert [m["content"] for m in tight.messages] == ["sys", "now?"]


def test_a_message_that_cannot_fit_raises():
    with pytest.raises(PromptTooLong) as caught:
        build_prompt("sys", EXAMPLES, HISTORY, "x" * 3000, budget=500)
    assert caught.value.budget == 500
    assert caught.value.needed > 500


# -- through the core: what is stored --------------------------------------------------------


@pytest.fixture
def small_core(fewtune_home, embedder):
    """A core with a small prompt budget: 300 tokens of context, 100 kept for the reply."""
    (fewtune_home / "fewtune.toml").write_text("[chat]\ncontext_tokens = 300\nreply_tokens = 100\n")
    core = Core.open(fewtune_home, embedder=embedder)
    yield core
    core.close()


def stored_replies(core: Core, conversation_id: int) -> list[dict]:
    return list(
        core.db.query(
            "SELECT * FROM messages WHERE conversation_id = ? AND role = 'assistant' ORDER BY id",
            [conversation_id],
        )
    )


def test_the_stored_reply_records_examples_used_and_trimming(small_core):
    core = small_core
    core.assistants.create(TERMINAL, "numbers", "Turn number words into digits.", k=3)
    words = {"forty-two": "42", "seven": "7", "one hundred": "100", "twelve": "12"}
    ids = {w: core.examples.add(TERMINAL, "numbers", w, d).id for w, d in words.items()}
    conversation = core.chat.start(TERMINAL, "numbers")

    first = core.chat.prepare(TERMINAL, conversation.id, "forty-three")
    assert len(first.examples) == 3
    assert first.examples[0].id == ids["forty-two"]
    assert first.trimmed == {}
    assert first.messages[0] == {"role": "system", "content": "Turn number words into digits."}
    assert first.messages[-2]["content"] == "42"  # the best example sits next to the message
    core.chat.record(first, TERMINAL, {"content": "43 " + "and more " * 40, "model": "local:x"})
    row = stored_replies(core, conversation.id)[0]
    used = json.loads(row["examples_used"])
    assert [u["id"] for u in used] == [e.id for e in first.examples]
    assert all(isinstance(u["score"], float) for u in used)
    assert used[0]["score"] >= used[-1]["score"]
    assert row["trimmed"] is None
    assert row["model"] == "local:x"

    # The long reply above no longer fits with three examples: history goes first.
    second = core.chat.prepare(TERMINAL, conversation.id, "seventy-seven " * 10)
    assert second.trimmed.get("history_messages", 0) >= 1
    core.chat.record(second, TERMINAL, {"content": "77", "model": "local:x"})
    row = stored_replies(core, conversation.id)[1]
    assert json.loads(row["trimmed"]) == second.trimmed
    assert [u["id"] for u in json.loads(row["examples_used"])] == [e.id for e in second.examples]


def test_examples_are_trimmed_after_history_and_recorded(small_core):
    core = small_core
    core.assistants.create(TERMINAL, "long", "Answer.", k=4, selector="fixed")
    for i in range(4):
        core.examples.add(TERMINAL, "long", f"question {i} " + "word " * 40, f"answer {i}")
    conversation = core.chat.start(TERMINAL, "long")
    prepared = core.chat.prepare(TERMINAL, conversation.id, "hello")
    assert prepared.trimmed["examples"] >= 1
    kept = len(prepared.examples)
    assert kept == 4 - prepared.trimmed["examples"]
    first_ids = [e.id for e in core.examples.list(TERMINAL, "long")][:kept]
    assert [e.id for e in prepared.examples] == first_ids  # fixed: the later ones go first
    core.chat.record(prepared, TERMINAL, {"content": "hi", "model": "local:x"})
    row = stored_replies(core, conversation.id)[0]
    assert json.loads(row["trimmed"]) == prepared.trimmed
    assert [u["id"] for u in json.loads(row["examples_used"])] == first_ids
    assert all(u["score"] is None for u in json.loads(row["examples_used"]))


def test_a_message_too_long_for_the_budget_is_refused_and_not_stored(small_core):
    core = small_core
    core.assistants.create(TERMINAL, "numbers", "Turn number words into digits.")
    conversation = core.chat.start(TERMINAL, "numbers")
    with pytest.raises(InvalidInput, match="send a shorter message"):
        core.chat.prepare(TERMINAL, conversation.id, "x" * 1000)
    assert core.chat.history(conversation.id) == []
    with pytest.raises(InvalidInput, match="empty"):
        core.chat.prepare(TERMINAL, conversation.id, "   ")
    assert core.chat.history(conversation.id) == []
