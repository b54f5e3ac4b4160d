"""The evaluation gate end to end on loopback: the real core (SQLite, chromadb) evaluates a
promotion against scripted OpenAI-compatible providers on 127.0.0.1 (tests/fake_model.py): the
few-shot model, the fine-tuned model and a judge. Chat-only providers cannot score, so the
likelihood is skipped there (tests/test_likelihood.py scores on loopback)."""

from __future__ import annotations

import json
import re

import pytest
from fake_model import FakeModel
from test_chat import closed_url

from assistants import Actor, Core
from assistants.promotion import EVALUATING
from assistants.stats import binomial_p

OWNER = Actor("owner")
ANSWER = re.compile(r"<answer_(a|b)>\n(.*?)\n</answer_\1>", re.S)
QUESTION = re.compile(r"<message>\n(.*?)\n</message>", re.S)


def pair(body) -> tuple[str, str, str]:
    """The judged message, answer A and answer B in a judge's request."""
    prompt = body["messages"][-1]["content"]
    answers = dict(ANSWER.findall(prompt))
    return QUESTION.search(prompt).group(1), answers["a"], answers["b"]


def prefers(better: str):
    """A consistent judge: the answer `better` wins, in whichever place it is."""

    def respond(body) -> str:
        _, a, b = pair(body)
        return "Verdict: A" if a == better else "Verdict: B" if b == better else "Verdict: tie"

    return respond


async def evaluate(home, embedder, few: FakeModel, tuned: FakeModel, *, judge=None, toml=""):
    """Assistant `support` on provider `few`, a promotion whose fine-tuned model is on `tuned`,
    evaluated and decided; the promotion as it ended and the held-out questions."""
    providers = "".join(
        f'[providers.{name}]\nbase_url = "{url}"\nmax_retries = 0\ntimeout = 5\n'
        for name, url in (("few", few.base_url), ("tuned", tuned.base_url), *(judge or ()))
    )
    (home / "fewtune.toml").write_text(providers + toml, encoding="utf-8")
    core = Core.open(home, embedder=embedder)
    try:
        core.assistants.create(OWNER, "support", "Answer the customer.", k=2, model="few:base")
        lines = "\n".join(
            json.dumps({"input": f"question {i}", "output": f"answer {i}"}) for i in range(120)
        )
        core.examples.import_data(OWNER, "support", "e.jsonl", lines.encode())
        assistant = core.assistants.get(OWNER, "support")
        _, data = core.promotions.dataset(OWNER, "support")
        follower = {"frontend": "test", "actor": OWNER.to_dict(), "force": False}
        with core.db.conn:
            promotion_id = (
                core.db.table("promotions")
                .insert(
                    {
                        "assistant_id": assistant.id,
                        "provider": "tuned",
                        "base_model": "base",
                        "job_id": "ftjob-1",
                        "status": EVALUATING,
                        "fine_tuned_model": "ft",
                        "follower": json.dumps(follower),
                        "created_at": "2026-01-01",
                        "updated_at": "2026-01-01",
                    }
                )
                .last_pk
            )
        promotion = core.promotions._get(promotion_id)
        await core.promotions._evaluate(promotion, None)
        ended = core.promotions._decide(promotion_id, OWNER, False)
        await core.providers.close()
        switched_to = core.assistants.get(OWNER, "support").fine_tuned_model
    finally:
        core.close()
    return ended, [item.question for item in data.held_out_items], switched_to


@pytest.fixture
def models():
    with FakeModel(reply="wrong answer") as few, FakeModel(reply="right answer") as tuned:
        yield few, tuned


async def test_a_consistent_judge_asked_in_both_orders_decides_by_the_sign_test(
    fewtune_home, embedder, models
):
    few, tuned = models
    with FakeModel(respond=prefers("right answer")) as judge:
        ended, questions, switched_to = await evaluate(
            fewtune_home,
            embedder,
            few,
            tuned,
            judge=[("judge", judge.base_url)],
            toml='[evaluation]\njudge = "judge:referee"\n',
        )
    n = len(questions)
    assert n >= 10, "120 examples at 10% hold out about 12"
    ev = ended.evaluation
    # Every held-out chat, for each candidate, asked twice: few-shot first, then second.
    asked = [pair(body) for body in judge.history]
    assert len(asked) == 2 * 2 * n
    for first, second in zip(asked[::2], asked[1::2], strict=True):
        assert first[0] == second[0] in questions
        assert (first[1], first[2]) == ("wrong answer", "right answer")
        assert (second[1], second[2]) == ("right answer", "wrong answer")
    assert {body["model"] for body in judge.history} == {"referee"}
    for candidate in ("fine_tuned", "fine_tuned_with_examples"):
        judged = ev["judge"][candidate]
        assert judged["verdicts"] == [1] * n and judged["disagreements"] == 0
        assert ev["tests"][candidate]["judge"]["p"] == binomial_p(n, 0)
    assert ev["primary"] == "judge"
    decision = ev["decision"]
    assert decision["switch"] and decision["candidate"] == "fine_tuned_with_examples"
    assert decision["reason"].startswith("Fine-tuned + examples beats few-shot on the judge's")
    assert ended.switched and switched_to == "tuned:ft"


async def test_a_judge_that_disagrees_with_itself_counts_ties_and_nothing_switches(
    fewtune_home, embedder, models
):
    few, tuned = models
    with FakeModel(reply="Verdict: A") as judge:  # position bias: always the first answer
        ended, questions, switched_to = await evaluate(
            fewtune_home,
            embedder,
            few,
            tuned,
            judge=[("judge", judge.base_url)],
            toml='[evaluation]\njudge = "judge:referee"\n',
        )
    ev = ended.evaluation
    judged = ev["judge"]["fine_tuned_with_examples"]
    assert judged["ties"] == len(questions) == judged["disagreements"]
    assert judged["wins"] == judged["losses"] == 0
    assert ev["tests"]["fine_tuned_with_examples"]["judge"]["p"] == 1.0
    assert not ev["decision"]["switch"] and not ended.switched and switched_to is None
    assert ev["decision"]["reason"].startswith("No significant gain on the judge's verdicts")


@pytest.mark.parametrize("losses", [1, 3])
async def test_the_decision_follows_the_sign_test_of_the_judges_wins(
    fewtune_home, embedder, models, losses
):
    """The judge prefers few-shot on the first `losses` held-out questions (in both orders),
    the candidate on the others; the switch is the sign test's at alpha / 2."""
    few, tuned = models
    held_out: list[str] = []

    def respond(body) -> str:
        question, a, b = pair(body)
        if question not in held_out:
            held_out.append(question)
        better = "wrong answer" if held_out.index(question) < losses else "right answer"
        return prefers(better)(body)

    with FakeModel(respond=respond) as judge:
        ended, questions, _ = await evaluate(
            fewtune_home,
            embedder,
            few,
            tuned,
            judge=[("judge", judge.base_url)],
            toml='[evaluation]\njudge = "judge:referee"\n',
        )
    n = len(questions)
    test = ended.evaluation["tests"]["fine_tuned_with_examples"]["judge"]
    p = binomial_p(n - losses, losses)
    assert test["p"] == p and test["difference"] == n - 2 * losses
    assert ended.evaluation["decision"]["switch"] is (p < 0.025) is ended.switched


async def test_a_judge_that_is_down_is_one_sentence_and_the_gate_falls_back(fewtune_home, embedder):
    # "answer" shares more words with "answer 7" than "wrong answer" does: token F1 decides.
    with FakeModel(reply="wrong answer") as few, FakeModel(reply="answer") as tuned:
        ended, questions, switched_to = await evaluate(
            fewtune_home,
            embedder,
            few,
            tuned,
            judge=[("judge", closed_url())],
            toml='[evaluation]\njudge = "judge:referee"\n',
        )
    ev = ended.evaluation
    assert "judge" not in ev
    assert ev["notes"][-1] == (
        "The judge judge:referee was left out, so the gate went on to the next metric: "
        "Could not reach provider 'judge'; check that it is running and try again."
    )
    # The likelihood was skipped too (chat-only providers), and exact match never differs.
    assert ev["few_shot"]["log_prob"] is None and ev["primary"] == "token_f1"
    assert ev["few_shot"]["token_f1"] == pytest.approx(0.5)
    assert ev["fine_tuned"]["token_f1"] == pytest.approx(2 / 3)
    assert ev["tests"]["fine_tuned"]["token_f1"]["test"] == "Wilcoxon signed-rank"
    assert ev["tests"]["fine_tuned"]["token_f1"]["p"] == 2 / 2 ** len(questions)
    assert ev["decision"]["switch"] and ended.switched and switched_to == "tuned:ft"
    assert ev["decision"]["metric"] == "token_f1"


async def test_too_few_held_out_chats_cannot_decide(fewtune_home, embedder):
    with FakeModel(reply="wrong answer") as few, FakeModel(reply="answer") as tuned:
        ended, questions, switched_to = await evaluate(
            fewtune_home, embedder, few, tuned, toml="[evaluation]\nmin_held_out = 50\n"
        )
    n = len(questions)
    assert ended.evaluation["tests"]["fine_tuned"]["token_f1"]["p"] < 0.025  # better, but…
    assert ended.evaluation["decision"]["reason"] == (
        f"Not enough evidence yet: {n} held-out chats, fewer than the 50 the gate needs to "
        "decide; collect more or --force."
    )
    assert not ended.switched and switched_to is None


def asked(prompt: str) -> str:
    """The question a scored prompt ends with (its last user line)."""
    return prompt.rsplit("<|user|>", 1)[1].split("\n", 1)[0]


def answers_its_question(prompt: str, answer: str) -> bool:
    return asked(prompt).replace("question", "answer") == answer


def scores(tied: float, untied: float):
    """A scoring model: each answer character has log-prob `tied` after the answer's own
    question and `untied` after any other."""
    return lambda prompt, answer: tied if answers_its_question(prompt, answer) else untied


async def test_a_model_that_learned_the_style_but_not_the_answers_does_not_switch(
    fewtune_home, embedder
):
    # Few-shot: -1.0 per token after the right question, -2.0 after another (margin +1). The
    # candidate finds every answer likelier (-0.5) whatever the question: its margin is 0.
    with (
        FakeModel(reply="x", score=scores(-1.0, -2.0)) as few,
        FakeModel(reply="x", score=scores(-0.5, -0.5)) as tuned,
    ):
        ended, questions, switched_to = await evaluate(fewtune_home, embedder, few, tuned)
    n = len(questions)
    ev = ended.evaluation
    assert ev["primary"] == "log_prob"
    assert ev["few_shot"]["scores"]["log_prob"] == pytest.approx([-1.0] * n)
    assert ev["few_shot"]["scores"]["margin"] == pytest.approx([1.0] * n)
    for candidate in ("fine_tuned", "fine_tuned_with_examples"):
        assert ev[candidate]["margin"] == pytest.approx(0.0)
        assert ev["tests"][candidate]["log_prob"]["difference"] == pytest.approx(0.5)
        assert ev["tests"][candidate]["log_prob"]["p"] < ev["threshold"]
        assert ev["tests"][candidate]["margin"]["difference"] == pytest.approx(-1.0)
        assert ev["tests"][candidate]["margin"]["p"] == pytest.approx(2 / 2**n)
    decision = ev["decision"]
    assert not decision["switch"] and not ended.switched and switched_to is None
    assert decision["guard"]["metric"] == "margin"
    assert decision["reason"] == (
        "Fine-tuned + examples finds the owner's answers likelier than few-shot does (p<0.001), "
        "but less tied to their questions (likelihood margin -1.000 per token, Wilcoxon "
        "signed-rank, p<0.001 < 0.025): it learned the style more than the answers, so the "
        "assistant keeps its model (--force switches anyway)."
    )


async def test_a_model_likelier_on_the_answers_and_as_tied_to_the_questions_switches(
    fewtune_home, embedder
):
    with (
        FakeModel(reply="x", score=scores(-1.0, -2.0)) as few,
        FakeModel(reply="x", score=scores(-0.5, -1.5)) as tuned,
    ):
        ended, _, switched_to = await evaluate(fewtune_home, embedder, few, tuned)
    ev = ended.evaluation
    assert ev["fine_tuned"]["margin"] == pytest.approx(1.0)
    assert ev["tests"]["fine_tuned"]["margin"]["difference"] == pytest.approx(0.0)
    assert ev["decision"]["switch"] and "guard" not in ev["decision"]
    assert ev["decision"]["reason"].startswith(
        "Fine-tuned + examples beats few-shot on the likelihood of the owner's answers"
    )
    assert ended.switched and switched_to == "tuned:ft"
