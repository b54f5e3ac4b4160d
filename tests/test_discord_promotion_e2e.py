"""/assistant promote end to end: the real bot on the loopback Discord, the real Core, and the
real `fewtune serve` app with a tiny Llama that trains a LoRA adapter for a few steps in its job
worker. One progress message is edited as the job runs and ends with the evaluation, the loss
curve and the scores chart; then /assistant status and /assistant rollback."""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest
from discord_fake.harness import SERVE_TOKEN_ENV
from discord_fake.world import World, create_assistant, run
from server_fixtures import make_tiny_model, serving, write_settings

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory):
    """`fewtune serve` with a tiny random Llama (model `tiny-llama`) and its job worker."""

    token = os.environ.setdefault(SERVE_TOKEN_ENV, secrets.token_urlsafe(16))
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
    settings = write_settings(tmp_path_factory.mktemp("serve-home"), model=str(tiny))
    with serving(settings, token, fine_tuning=True) as (url, _):
        yield url


async def ask_to_promote(w: World):
    """Alice's assistant `numbers` on the tiny model with 40 examples, and her
    `/assistant promote numbers` (answered with the dataset and a Promote button)."""
    w.bot.promotion_poll_seconds = 0.2
    await create_assistant(w, w.alice, "numbers")
    owner = w.bot_actor(w.alice)
    # Few tokens per answer: the evaluation generates with the tiny model on the CPU.
    w.core.assistants.edit(owner, "numbers", model="fewtune:tiny-llama", max_tokens=4, k=2)
    lines = "\n".join(json.dumps({"input": f"number {i}", "output": str(i)}) for i in range(40))
    w.core.examples.import_data(owner, "numbers", "e.jsonl", lines.encode())
    ix = await run(
        w, "assistant", "promote", user=w.alice, channel=w.channel, options={"name": "numbers"}
    )
    return owner, ix


@pytest.mark.slow
async def test_promote_follows_the_job_in_one_message_then_status_and_rollback(world: World):
    w = world
    owner, ix = await ask_to_promote(w)
    assert ix.acknowledged_after < 3
    asked = next((m for m in ix.messages() if m.buttons()), None)
    assert asked is not None, ix.text()
    assert "Promote numbers?" in asked.content and "training chats" in asked.content
    started = time.time()
    confirmed = await w.fake.click(asked, "Promote", user=w.alice)
    await w.fake.answered(confirmed)
    assert confirmed.acknowledged_after < 3
    assert "progress is shown below" in asked.content and not asked.buttons()

    def progress_messages():
        return [m for m in w.fake.bot_messages(w.channel) if not m.ephemeral]

    shown = await w.fake.wait_until(progress_messages, what="the progress message")
    assert len(shown) == 1
    progress = shown[0]
    # The bot is not blocked meanwhile: a command is answered while the job runs.
    listed = await run(w, "assistant", "list", user=w.bob, channel=w.channel)
    assert listed.acknowledged_after < 3 and "numbers" in listed.text()

    await w.fake.wait_until(
        lambda: (
            progress.attachments or "stopped" in progress.content or "ended" in progress.content
        ),
        timeout=240,
        what="the promotion to finish",
    )
    content = progress.content
    assert "is fine-tuned" in content, content
    assert (
        "Evaluation on" in content and "few-shot" in content and "fine-tuned + examples" in content
    )
    assert [a.filename for a in progress.attachments] == ["loss.png", "scores.png"]
    assert all(a.data.startswith(PNG) for a in progress.attachments)
    # Still the one message, edited as the job ran: steps and losses, at most about once a second.
    assert len(progress_messages()) == 1
    assert any("step" in e.content and "training loss" in e.content for e in progress.edits)
    times = [e.at for e in progress.edits]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= 0.9 for g in gaps), gaps
    assert len(times) <= (time.time() - started) + 2

    promotion = w.core.promotions.latest(owner, "numbers")
    assert promotion.status == "succeeded" and promotion.evaluation is not None
    # A fewtune server scores: the likelihood of the owner's answers is the primary metric.
    ev = promotion.evaluation
    assert all(ev[s]["log_prob"] is not None for s in ("few_shot", "fine_tuned"))
    assert ev["primary"] == "log_prob" and "log-prob/token" in content
    # The live message says what is stored: the decision, in its one sentence.
    assert f"decision: {promotion.evaluation['decision']['reason']}" in content
    status = await run(
        w, "assistant", "status", user=w.alice, channel=w.channel, options={"name": "numbers"}
    )
    assert status.ephemeral and "succeeded" in status.text() and "Evaluation on" in status.text()
    rolled = await run(
        w, "assistant", "rollback", user=w.alice, channel=w.channel, options={"name": "numbers"}
    )
    if promotion.switched:
        assert "numbers" in rolled.text() and "fewtune:tiny-llama" in rolled.text()
        assert w.core.assistants.get(owner, "numbers").fine_tuned_model is None
    else:
        assert "is not using a fine-tuned model" in rolled.text()


@pytest.mark.slow
async def test_a_restarted_bot_goes_on_following_the_promotion_to_its_end(world: World):
    """The bot stops while the job runs; started again, it edits the same progress message on
    to the evaluation and the switch, as if it had never stopped."""
    from discord_fake.harness import running_bot

    w = world
    owner, ix = await ask_to_promote(w)
    asked = next(m for m in ix.messages() if m.buttons())
    await w.fake.answered(await w.fake.click(asked, "Promote", user=w.alice))

    def followed():
        return w.core.promotions.followed("discord")

    def job_followed():
        return [p for p, _ in followed() if p.job_id]

    # Followed from the moment it is stored; the job exists once its files are uploaded (a
    # bot stopped before that ends the promotion: tests/test_promotion_interrupted.py).
    await w.fake.wait_until(job_followed, 60, "the job to be created and followed")
    await w.bot.close()  # a restart: the job goes on on the server meanwhile
    (progress,) = [m for m in w.fake.bot_messages(w.channel) if not m.ephemeral]
    assert "is fine-tuned" not in progress.content
    assert w.core.promotions.latest(owner, "numbers").evaluation is None

    async with running_bot(w.fake, w.core, progress_interval=0.2, promotion_poll_seconds=0.2):
        await w.fake.wait_until(
            lambda: progress.attachments or "stopped" in progress.content,
            timeout=240,
            what="the resumed promotion to finish",
        )
        assert "is fine-tuned" in progress.content, progress.content
        assert "Evaluation on" in progress.content
        assert [a.filename for a in progress.attachments] == ["loss.png", "scores.png"]
        assert [m for m in w.fake.bot_messages(w.channel) if not m.ephemeral] == [progress]
        await w.fake.wait_until(lambda: not followed(), 10, "the promotion to be seen through")
        promotion = w.core.promotions.latest(owner, "numbers")
        assert promotion.evaluation is not None and promotion.follower is None
