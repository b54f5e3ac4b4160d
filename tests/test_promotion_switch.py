"""The eval-gated switch and rollback, on stored promotions (no model needed): evaluations with
per-item scores, summarised by the gate as the evaluation stores them."""

from __future__ import annotations

import json

import pytest

from assistants import TERMINAL, InvalidInput
from assistants.gate import setting_scores, summarise

ITEMS = 40


def scores(few, alone, hybrid, items=ITEMS):
    """An evaluation where each setting answers the first `share` of the items exactly."""

    def one(share):
        exact = [int(i < round(share * items)) for i in range(items)]
        return setting_scores("m", 0, exact, [float(e) for e in exact], None)

    settings = {
        "few_shot": one(few),
        "fine_tuned": one(alone),
        "fine_tuned_with_examples": one(hybrid),
    }
    return summarise(settings, alpha=0.05, floor=10)


@pytest.fixture
def promoted(core):
    assistant = core.assistants.create(TERMINAL, "helper", "Answer.", k=4)

    def add(evaluation):
        with core.db.conn:
            core.db.table("promotions").insert(
                {
                    "assistant_id": assistant.id,
                    "provider": "local",
                    "base_model": "tiny",
                    "job_id": "ftjob-x",
                    "status": "succeeded",
                    "fine_tuned_model": "ft:tiny:helper:ftjob-x",
                    "evaluation": json.dumps(evaluation) if evaluation else None,
                    "created_at": "2026-01-01",
                    "updated_at": "2026-01-01",
                }
            )

    return add


def test_alone_scoring_best_switches_with_k_zero_and_rollback_restores_k(core, promoted):
    promoted(scores(few=0.14, alone=0.6, hybrid=0.17))
    result = core.promotions.switch(TERMINAL, "helper")
    assert result.switched and result.previous_k == 4
    assistant = core.assistants.get(TERMINAL, "helper")
    assert assistant.fine_tuned_model == "local:ft:tiny:helper:ftjob-x" and assistant.k == 0
    back = core.promotions.rollback(TERMINAL, "helper")
    assert back.fine_tuned_model is None and back.k == 4


def test_the_hybrid_scoring_best_keeps_the_examples(core, promoted):
    promoted(scores(few=0.14, alone=0.10, hybrid=0.6))
    assert core.promotions.switch(TERMINAL, "helper").switched
    assert core.assistants.get(TERMINAL, "helper").k == 4


def test_no_switch_when_both_score_below_few_shot_unless_forced(core, promoted):
    promoted(scores(few=0.30, alone=0.20, hybrid=0.25))
    assert not core.promotions.switch(TERMINAL, "helper").switched
    assert core.assistants.get(TERMINAL, "helper").fine_tuned_model is None
    assert core.promotions.switch(TERMINAL, "helper", force=True).switched


def test_an_unevaluated_promotion_switches_only_when_forced(core, promoted):
    promoted(None)
    with pytest.raises(InvalidInput):
        core.promotions.switch(TERMINAL, "helper")
    assert core.promotions.switch(TERMINAL, "helper", force=True).switched
    assert core.assistants.get(TERMINAL, "helper").k == 4


def test_a_frontend_finds_the_promotions_it_follows_until_it_lets_them_go(core, promoted):
    promoted(None)
    promoted(None)
    first, second = (p["id"] for p in core.db.query("SELECT id FROM promotions ORDER BY id"))
    assert core.promotions.followed("discord") == []
    where = {"frontend": "discord", "channel_id": "1", "message_id": "2", "user_id": "3"}
    core.promotions.follow_from(second, where)
    core.promotions.follow_from(first, {**where, "frontend": "slack"})
    ((promotion, assistant),) = core.promotions.followed("discord")
    assert promotion.id == second and promotion.follower == where and assistant.name == "helper"
    core.promotions.follow_from(second, None)
    assert core.promotions.followed("discord") == []
    assert [p.id for p, _ in core.promotions.followed("slack")] == [first]


def test_too_few_held_out_chats_refuse_the_switch_unless_forced(core, promoted):
    promoted(scores(few=0.0, alone=1.0, hybrid=1.0, items=7))
    result = core.promotions.switch(TERMINAL, "helper")
    assert not result.switched
    assert result.evaluation["decision"]["reason"] == (
        "Not enough evidence yet: 7 held-out chats, fewer than the 10 the gate needs to decide; "
        "collect more or --force."
    )
    forced = core.promotions.switch(TERMINAL, "helper", force=True)
    assert forced.switched
    # What status and the live message show says it was forced, and why the gate would not.
    assert forced.evaluation["decision"]["forced"] is True
    assert forced.evaluation["decision"]["reason"].startswith(
        "Switched as forced, though the gate said: not enough evidence yet: 7 held-out chats"
    )


def test_a_gain_that_is_not_significant_keeps_the_model(core, promoted):
    # 5 of 40 against 2 of 40: McNemar on 3 discordant pairs, p = 0.25.
    promoted(scores(few=0.05, alone=0.05, hybrid=0.125))
    result = core.promotions.switch(TERMINAL, "helper")
    assert not result.switched
    assert result.evaluation["tests"]["fine_tuned_with_examples"]["exact_match"]["p"] == 0.25
    assert result.evaluation["decision"]["reason"].startswith(
        "No significant gain on exact match over few-shot (fine-tuned + examples: exact McNemar, "
        "p=0.250)"
    )
    assert core.promotions.switch(TERMINAL, "helper", force=True).switched
    assert core.assistants.get(TERMINAL, "helper").k == 4  # forced to the better-looking one
