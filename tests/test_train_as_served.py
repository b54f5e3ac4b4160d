"""Train the way it serves: each training chat of a promotion carries the examples the assistant
retrieves for it, in the prompt `Chat.compose` builds, never its own example or a duplicate of
it; the held-out evaluation builds its prompts the same way. Real core, real chromadb."""

from __future__ import annotations

import json

import pytest
from fake_model import FakeModel
from test_chat import closed_port
from test_dataset import converse

from assistants import TERMINAL, Actor, Core
from assistants.dataset import MAX_CHAT_TOKENS, build_dataset
from assistants.promotion import EVALUATING
from assistants.prompt import messages_tokens
from storage.settings import SettingsError, load_settings
from training.trainer.chat_data import validate_chat_jsonl

OWNER = Actor("owner")
WORDS = [
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("twenty-one", "21"),
    ("twenty-two", "22"),
    ("thirty-one", "31"),
    ("forty-two", "42"),
]


def numbers(core: Core, model: str | None = None, owner: Actor = OWNER) -> None:
    extra = {"model": model} if model else {}
    core.assistants.create(owner, "numbers", "Write the number.", k=3, **extra)
    for word, digits in WORDS:
        core.examples.add(owner, "numbers", word, digits)


def served_contexts(messages):
    """The example turns in a training chat: those before its own history and question."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[1:last_user]


def test_each_chat_carries_what_compose_selects_for_it_in_the_served_layout(core):
    numbers(core)
    assistant = core.assistants.get(OWNER, "numbers")
    _, data = core.promotions.dataset(OWNER, "numbers")
    rows = {e.input: e for e in core.examples.list(OWNER, "numbers")}
    assert data.stats["with_examples"] is True
    assert data.stats["chats_with_examples"] == len(data.train) + len(data.held_out) == len(WORDS)
    for chat in [*data.train, *data.held_out]:
        messages = chat["messages"]
        question, answer = messages[-2], messages[-1]
        own = rows[question["content"]]
        # Exactly the prompt serving builds for this message, leaving out its own example and
        # the held-out ones, then the real answer, the one turn learned.
        composed = core.chat.compose(
            assistant,
            [],
            question["content"],
            seed=own.id,
            exclude=frozenset(data.held_out_example_ids | {own.id}),
        )
        assert len(composed.examples) == 3 and own.id not in [e.id for e in composed.examples]
        expected = [
            {**m, "weight": 0} if m["role"] == "assistant" else m for m in composed.messages
        ]
        assert messages == [*expected, {"role": "assistant", "content": own.output}]
        assert messages[0] == {"role": "system", "content": "Write the number."}
        context = served_contexts(messages)
        assert len(context) == 6 and all(m.get("weight") == 0 for m in context[1::2])
        assert "weight" not in answer
        # Never its own example: its input is asked once, as the question.
        assert [m["content"] for m in messages].count(own.input) == 1
        held_out = {e.input for e in rows.values() if e.id in data.held_out_example_ids}
        assert not held_out & {m["content"] for m in context}
    # The fine-tuning API's own check accepts both files as they are uploaded.
    for split in ("train", "held_out"):
        assert len(validate_chat_jsonl(data.jsonl(split).encode())) == len(getattr(data, split))


def test_a_duplicate_of_the_chats_example_is_left_out_too(core):
    numbers(core)
    # A two-turn example whose last pair is the "seven" example's, after trimming.
    turns = [("hello", "hi"), (" seven ", "7")]
    line = {
        "messages": [
            {"role": role, "content": text}
            for question, answer in turns
            for role, text in (("user", question), ("assistant", answer))
        ]
    }
    result = core.examples.import_data(
        OWNER, "numbers", "more.jsonl", (json.dumps(line) + "\n").encode()
    )
    assert result.added == 1
    # A conversation with the same turns as that example is one of its duplicates.
    converse(core, OWNER, "numbers", [("hello", "hi"), ("seven", "7")])
    _, data = core.promotions.dataset(OWNER, "numbers")
    assert data.stats["filters"]["duplicates"] == 1
    chats = [c["messages"] for c in [*data.train, *data.held_out]]
    asked_seven = [m for m in chats if m[-2]["content"].strip() == "seven"]
    assert len(asked_seven) == 2  # the single example's chat and the two-turn one's
    for messages in asked_seven:
        contents = {m["content"].strip() for m in served_contexts(messages)}
        assert "seven" not in contents and "7" not in contents
    two_turns = next(m for m in asked_seven if m[-4]["content"] == "hello")
    # Its own history follows the examples and is learned; the examples are not.
    assert two_turns[-4:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": " seven "},
        {"role": "assistant", "content": "7"},
    ]
    context = served_contexts(two_turns)[:-2]
    assert len(context) == 6 and all(m["weight"] == 0 for m in context[1::2])


def test_a_conversation_never_sees_the_example_made_from_its_own_correction(core):
    numbers(core)
    _, (_, wrong) = converse(core, OWNER, "numbers", [("hello", "hi"), ("thirteen", "31")])
    feedback = core.feedback.improve(OWNER, wrong, "13")
    made = core.feedback.correction_to_example(OWNER, feedback.id)
    _, data = core.promotions.dataset(OWNER, "numbers")
    (conversation,) = [
        c["messages"]
        for c in [*data.train, *data.held_out]
        if c["messages"][-4:-3][0]["content"] == "hello"
    ]
    assert conversation[-2:] == [
        {"role": "user", "content": "thirteen"},
        {"role": "assistant", "content": "13"},
    ]
    assert made.input == "thirteen"
    assert all(m["content"] != "thirteen" for m in served_contexts(conversation))
    assert len(served_contexts(conversation)) == 6 + 2


def test_a_chat_too_long_with_its_examples_is_kept_without_them(core):
    numbers(core)
    core.examples.add(OWNER, "numbers", "count to a thousand", " ".join(["one"] * 1500))
    _, data = core.promotions.dataset(OWNER, "numbers")
    (long,) = [
        c["messages"]
        for c in [*data.train, *data.held_out]
        if len(c["messages"][-1]["content"]) > 5000
    ]
    assert len(long) == 3  # alone it fits the 2,048-token limit; with examples it would not
    chats = [c["messages"] for c in [*data.train, *data.held_out]]
    assert data.stats["chats_with_examples"] == sum(len(m) > 3 for m in chats) > 0
    assert all(messages_tokens(m) <= MAX_CHAT_TOKENS for m in chats)


def test_the_setting_off_gives_the_chats_without_examples_and_the_same_split(
    core, fewtune_home, embedder
):
    numbers(core)
    assistant = core.assistants.get(OWNER, "numbers")
    _, served = core.promotions.dataset(OWNER, "numbers")
    _, alone = core.promotions.dataset(OWNER, "numbers", with_examples=False)
    plain = build_dataset(core.db, assistant.id, assistant.instructions)
    assert alone.train == plain.train and alone.held_out == plain.held_out
    assert alone.stats["with_examples"] is False and alone.stats["chats_with_examples"] == 0
    assert all(len(c["messages"]) == 3 for c in alone.train)
    # The setting changes the prompts, never which chats there are nor their split.
    assert [c["messages"][-2:] for c in served.train] == [c["messages"][1:] for c in alone.train]
    assert served.held_out_items == alone.held_out_items
    assert served.stats["train_tokens"] > alone.stats["train_tokens"]
    # fewtune.toml turns it off for every promotion.
    (fewtune_home / "fewtune.toml").write_text("[promotion]\ntrain_with_examples = false\n")
    assert load_settings().promotion.train_with_examples is False
    off = Core.open(fewtune_home, embedder=embedder)
    try:
        _, data = off.promotions.dataset(OWNER, "numbers")
        assert data.train == plain.train and data.stats["with_examples"] is False
    finally:
        off.close()


def test_a_setting_that_is_not_true_or_false_gets_one_sentence(fewtune_home):
    (fewtune_home / "fewtune.toml").write_text('[promotion]\ntrain_with_examples = "yes"\n')
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value) == (
        "fewtune.toml: promotion.train_with_examples must be true or false, not 'yes'."
    )


def test_dataset_stats_say_how_many_chats_carry_examples(core, cli):
    numbers(core, owner=TERMINAL)
    served = json.loads(cli("dataset", "stats", "numbers", "--json").stdout)
    assert served["with_examples"] is True and served["chats_with_examples"] == len(WORDS)
    alone = json.loads(cli("dataset", "stats", "numbers", "--json", "--train-alone").stdout)
    assert alone["with_examples"] is False and alone["chats_with_examples"] == 0
    exported = cli("dataset", "export", "numbers").stdout.splitlines()
    assert all(len(json.loads(line)["messages"]) == 9 for line in exported)


async def test_the_evaluation_builds_held_out_prompts_as_served_and_leaves_one_out(
    fewtune_home, embedder
):
    with FakeModel(reply="0") as model:
        (fewtune_home / "fewtune.toml").write_text(
            f'[providers.fake]\nbase_url = "{model.base_url}"\nmax_retries = 0\n'
        )
        core = Core.open(fewtune_home, embedder=embedder)
        try:
            numbers(core, model="fake:base")
            assistant = core.assistants.get(OWNER, "numbers")
            _, data = core.promotions.dataset(OWNER, "numbers")
            assert data.held_out_items, "16 examples at 10% hold at least one out"
            with core.db.conn:
                promotion_id = (
                    core.db.table("promotions")
                    .insert(
                        {
                            "assistant_id": assistant.id,
                            "provider": "fake",
                            "base_model": "base",
                            "status": EVALUATING,
                            "fine_tuned_model": "tuned",
                            "follower": json.dumps({"frontend": "test", "actor": OWNER.to_dict()}),
                            "created_at": "2026-01-01",
                            "updated_at": "2026-01-01",
                        }
                    )
                    .last_pk
                )
            ((promotion, _),) = await core.promotions.to_resume("test")
            assert promotion.id == promotion_id
            # The job is done (no job to follow on a chat-only fake): evaluate, then decide.
            await core.promotions._evaluate(promotion, None)
            ended = core.promotions._decide(promotion_id, OWNER, False)
            await core.providers.close()
        finally:
            core.close()
    assert ended.evaluation["items"] == len(data.held_out_items)
    # A chat-only provider cannot score: the likelihood is skipped, in one sentence.
    assert ended.evaluation["few_shot"]["log_prob"] is None
    assert ended.evaluation["notes"] == [
        "The provider 'fake' cannot score answers (HTTP 404 on apply-template or completions "
        "with logprobs), so the likelihood was skipped."
    ]
    assert model.others == ["/v1/apply-template"]  # asked once, not for every item
    assert (
        not ended.switched and "Not enough evidence yet" in ended.evaluation["decision"]["reason"]
    )
    held_out = {item.question for item in data.held_out_items}
    sent = [(body["model"], body["messages"]) for body in model.history]
    assert len(sent) == 3 * len(data.held_out_items)
    by_setting = {
        "few_shot": [m for name, m in sent[: len(held_out)]],
        "fine_tuned": [m for name, m in sent[len(held_out) : 2 * len(held_out)]],
        "fine_tuned_with_examples": [m for name, m in sent[2 * len(held_out) :]],
    }
    assert {name for name, _ in sent} == {"base", "tuned"}
    for label, prompts in by_setting.items():
        for messages in prompts:
            question = messages[-1]["content"]
            assert question in held_out
            context = messages[1:-1]
            # Examples in the settings that use them, none alone; never a held-out one.
            assert len(context) == (0 if label == "fine_tuned" else 6)
            assert not held_out & {m["content"] for m in context}


@pytest.mark.parametrize(("flag", "with_examples"), [(None, True), ("--train-alone", False)])
def test_a_promotion_trains_with_examples_unless_told_not_to(
    fewtune_home, embedder, cli, flag, with_examples
):
    """`fewtune promote --train-alone` reaches the dataset the promotion uploads (here to a
    provider that is down: the promotion fails, its dataset's figures stay)."""
    (fewtune_home / "fewtune.toml").write_text(
        f'[providers.down]\nbase_url = "http://127.0.0.1:{closed_port()}/v1"\n'
        "max_retries = 0\ntimeout = 5\n"
    )
    core = Core.open(fewtune_home, embedder=embedder)
    try:
        numbers(core, model="down:base", owner=TERMINAL)
        result = cli("promote", "numbers", *([flag] if flag else []))
        assert result.exit_code == 1
        stats = core.promotions.latest(TERMINAL, "numbers").dataset_stats
    finally:
        core.close()
    assert stats["with_examples"] is with_examples
    assert stats["chats_with_examples"] == (len(WORDS) if with_examples else 0)
