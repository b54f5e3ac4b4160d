"""What the gate shows: `fewtune promote status`, Discord's `/assistant status` and the
promotion's final message render the stored evaluation, with the same numbers: each setting's
scores with their 95% intervals, the p-values against few-shot, the judge's verdicts, the notes
and the decision in one sentence; the scores chart. And the gate's options on the CLI."""

from __future__ import annotations

import json
import random

from discord_fake.world import World, create_assistant, run

from assistants import TERMINAL
from assistants.gate import judge_scores, setting_scores, summarise
from assistants.promotion import Promotion
from bot.discord.promoting import Promoter
from bot.discord.score_chart import scores_png

PNG = b"\x89PNG\r\n\x1a\n"


def evaluation() -> dict:
    """A stored evaluation with every metric: 30 items, the likelihood scored, a judge."""
    r = random.Random(7)
    n = 30

    def one(hit: float, shift: float):
        exact = [int(r.random() < hit) for _ in range(n)]
        f1 = [round(r.random(), 3) for _ in range(n)]
        log_prob = [round(-2 + shift + r.gauss(0, 0.5), 4) for _ in range(n)]
        margin = [round(0.3 + shift + r.gauss(0, 0.2), 4) for _ in range(n)]
        return setting_scores("m", 2, exact, f1, log_prob, margin)

    settings = {
        "few_shot": one(0.2, 0.0),
        "fine_tuned": one(0.3, 0.2),
        "fine_tuned_with_examples": one(0.5, 0.6),
    }
    judge = {
        "model": "judge:referee",
        "fine_tuned": judge_scores("judge:referee", [1] * 12 + [0] * 10 + [-1] * 8, 4, 0),
        "fine_tuned_with_examples": judge_scores("judge:referee", [1] * 20 + [0] * 10, 2, 1),
    }
    return summarise(settings, alpha=0.05, floor=10, judge=judge, notes=["A note."])


def promoted(core, owner, name: str, stored: dict) -> Promotion:
    assistant = core.assistants.get(owner, name)
    with core.db.conn:
        core.db.table("promotions").insert(
            {
                "assistant_id": assistant.id,
                "provider": "local",
                "base_model": "tiny",
                "job_id": "ftjob-x",
                "status": "succeeded",
                "fine_tuned_model": "ft:tiny:x",
                "evaluation": json.dumps(stored),
                "created_at": "2026-01-01",
                "updated_at": "2026-01-01",
            }
        )
    return core.promotions.latest(owner, name)


def figures(ev: dict) -> list[str]:
    """Every number the evaluation shows, formatted as shown."""
    shown = [ev["decision"]["reason"], "A note."]
    for key in ("few_shot", "fine_tuned", "fine_tuned_with_examples"):
        r = ev[key]
        low, high = r["intervals"]["exact_match"]
        shown.append(f"exact match {r['exact_match']:.1%} [{low:.1%}, {high:.1%}]")
        low, high = r["intervals"]["token_f1"]
        shown.append(f"token F1 {r['token_f1']:.3f} [{low:.3f}, {high:.3f}]")
        low, high = r["intervals"]["log_prob"]
        shown.append(f"log-prob/token {r['log_prob']:.3f} [{low:.3f}, {high:.3f}]")
        low, high = r["intervals"]["margin"]
        shown.append(f"margin {r['margin']:+.3f} [{low:+.3f}, {high:+.3f}]")
    for key in ("fine_tuned", "fine_tuned_with_examples"):
        for test in ev["tests"][key].values():
            p = test["p"]
            shown.append(f"p={p:.3f}" if p >= 0.001 else "p<0.001")
        j = ev["judge"][key]
        shown.append(f"{j['wins']} wins, {j['ties']} ties, {j['losses']} losses")
    return shown


def test_promote_status_shows_the_stored_numbers(core, cli):
    core.assistants.create(TERMINAL, "helper", "Answer.", k=2)
    stored = evaluation()
    promoted(core, TERMINAL, "helper", stored)
    # The judge is the primary metric: 20 wins and no loss, p = 2 / 2^20.
    assert stored["primary"] == "judge" and stored["decision"]["switch"]
    shown = cli("promote", "status", "helper").stdout
    for figure in figures(stored):
        assert figure in shown, figure
    assert "decision: Fine-tuned + examples beats few-shot on the judge's verdicts" in shown


async def test_discord_status_and_the_final_message_show_the_same_numbers(world: World):
    w = world
    await create_assistant(w, w.alice, "helper")
    owner = w.bot_actor(w.alice)
    stored = evaluation()
    promotion = promoted(w.core, owner, "helper", stored)
    status = await run(
        w, "assistant", "status", user=w.alice, channel=w.channel, options={"name": "helper"}
    )
    final = Promoter._final("helper", promotion)
    assert len(final) < 2000  # one Discord message
    for figure in figures(stored):
        assert figure in status.text(), figure
        assert figure in final, figure
    png = scores_png(stored, "helper: evaluation")
    assert png is not None and png.startswith(PNG)


def test_the_judge_option_is_checked_before_anything_starts(core, cli):
    core.assistants.create(TERMINAL, "helper", "Answer.")
    for args, said in (
        (("--judge", "judge:m"), "Error: --judge is for the evaluation, which runs with --wait"),
        (("--wait", "--judge", "nocolon"), "Error: A judge is \"provider:model\", not 'nocolon'."),
        (("--wait", "--judge", "nosuch:m"), "Error: The judge 'nosuch:m' cannot be used: Unknown"),
    ):
        result = cli("promote", "helper", *args)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(said), lines
    assert list(core.db.query("SELECT id FROM promotions")) == []


def test_dataset_stats_show_the_held_out_floor(core, cli, fewtune_home):
    core.assistants.create(TERMINAL, "helper", "Answer.")
    for i in range(12):
        core.examples.add(TERMINAL, "helper", f"question {i}", f"answer {i}")
    stats = json.loads(cli("dataset", "stats", "helper", "--json").stdout)
    assert stats["held_out_floor"] == 10 and stats["held_out_chats"] < 10
    shown = cli("dataset", "stats", "helper").stdout
    assert "held_out_floor       10" in shown
    assert "Fewer held-out chats than the floor of 10: the evaluation cannot decide" in shown
    (fewtune_home / "fewtune.toml").write_text("[evaluation]\nmin_held_out = 1\n")
    assert json.loads(cli("dataset", "stats", "helper", "--json").stdout)["held_out_floor"] == 1


def test_bad_evaluation_settings_are_one_sentence(fewtune_home, cli):
    for toml, said in (
        ("alpha = 2", "evaluation.alpha must be between 0 and 1, not 2."),
        ('judge = "nocolon"', "evaluation.judge must be \"provider:model\", not 'nocolon'."),
        ("min_held_out = 0", "evaluation.min_held_out must be a whole number of at least 1"),
        ("alpha = true", "evaluation.alpha must be a number, not True."),
    ):
        (fewtune_home / "fewtune.toml").write_text(f"[evaluation]\n{toml}\n")
        result = cli("assistant", "list")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], lines
