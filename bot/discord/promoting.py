"""/assistant promote in Discord: the dataset's figures and a confirm button, then ONE message
that shows the job's progress (status, step, loss; edited at most about once a second) and ends
with the evaluation (scores with 95% intervals, p-values, the decision in one sentence) and two
images: the loss curve and the evaluation's scores. The job is followed by a background task of
the bot, so the interaction is answered at once and the bot goes on serving everyone else
meanwhile.

The progress message has a Cancel button. Every decision is the core's (`core.promotions.promote`
runs start, follow, evaluate and switch; `resume` goes on after a restart; `cancel`); this module
only turns its steps into a message.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord

from assistants import Assistant, FewtuneError
from assistants.promotion import OnStep, Promotion, Step
from bot.discord.actors import actor_of
from bot.discord.loss_chart import loss_curve_png
from bot.discord.progress import ThrottledMessage
from bot.discord.replies import NO_MENTIONS, UNEXPECTED, say
from bot.discord.score_chart import scores_png
from bot.evaluation_report import report_lines

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot

log = logging.getLogger("fewtune.discord")
FRONTEND = "discord"  # how this frontend names itself in a promotion's follower


def dataset_figures(assistant: Assistant, stats: dict[str, Any]) -> str:
    """What a promotion of `assistant` would train on, in a few lines."""
    lines = [
        f"**Promote {assistant.name}?** Its own model is fine-tuned (LoRA) on:",
        f"- {stats.get('train_chats', 0)} training chats, {stats.get('train_tokens', 0):,} tokens "
        f"({stats.get('examples', 0)} from examples, {stats.get('conversations', 0)} from "
        "conversations)",
        f"- {stats.get('held_out_chats', 0)} held-out chats for the evaluation (it decides "
        f"from {stats.get('held_out_floor', 0)} on; below that only force switches)",
    ]
    if stats.get("chats_with_examples"):
        lines.append(
            f"- {stats['chats_with_examples']} of them carry the examples each would be served "
            "with (in the prompt, not learned)"
        )
    removed = {k: v for k, v in (stats.get("filters") or {}).items() if v}
    if removed:
        lines.append(
            "- filtered: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in removed.items())
        )
    lines.append(
        f"Base model: `{assistant.model}`. It switches only if the fine-tuned model is "
        "significantly better than few-shot on the held-out chats."
    )
    return "\n".join(lines)


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """The stored evaluation as `fewtune promote status` shows it, as a Discord list."""
    lines = report_lines(evaluation)
    return lines[:1] + [f"- {line}" for line in lines[1:]]


def promotion_summary(name: str, promotion: Promotion) -> str:
    """The latest promotion of `name`, as `/assistant status` shows it."""
    lines = [
        f"**{name}**: promotion job `{promotion.job_id}` on {promotion.provider} "
        f"is **{promotion.status}** (base `{promotion.base_model}`)."
    ]
    if promotion.fine_tuned_model:
        lines.append(f"Fine-tuned model: `{promotion.fine_tuned_model}`")
    if promotion.error:
        lines.append(f"Error: {promotion.error}")
    if promotion.evaluation:
        lines += evaluation_lines(promotion.evaluation)
    if promotion.status == "succeeded":
        lines.append("Switched: " + ("yes" if promotion.switched else "no"))
    return "\n".join(lines)


@dataclass
class Progress:
    """What the progress message shows, from the core's steps."""

    name: str
    status: str = "starting"
    job_id: str | None = None
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # every metrics event's data

    def add(self, step: Step) -> None:
        self.status, self.job_id = step.promotion.status, step.promotion.job_id
        if step.metrics:
            # Validation loss comes every few steps: keep showing the latest known one.
            self.metrics.update({k: v for k, v in step.metrics.items() if v is not None})
            self.history.append(dict(step.metrics))
        elif step.message:
            self.note = step.message

    def render(self) -> str:
        job = f" (job `{self.job_id}`)" if self.job_id else ""
        lines = [f"**Promoting {self.name}**{job}: {self.status}"]
        m = self.metrics
        if m.get("step") is not None:
            step = f"step {m['step']}" + (f"/{m['total_steps']}" if m.get("total_steps") else "")
            if m.get("train_loss") is not None:
                step += f" · training loss {m['train_loss']:.4f}"
            if m.get("valid_loss") is not None:
                step += f" · validation loss {m['valid_loss']:.4f}"
            lines.append(step)
        if self.note:
            lines.append(self.note[:300])
        return "\n".join(lines)


class Promoter:
    """Shows promotions started from Discord: each is run by the core (`promote`) in a
    background task of the bot that edits its one progress message."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        self.running: set[asyncio.Task[None]] = set()
        self._resuming: asyncio.Task[None] | None = None

    async def ask(self, interaction: discord.Interaction, name: str, force: bool) -> None:
        """The dataset's figures and a confirm button (ephemeral; refusals too)."""
        from bot.discord.items import confirm_promote_view

        await interaction.response.defer(ephemeral=True, thinking=True)
        assistant, data = await self.core.promotions.to_promote(actor_of(interaction), name, force)
        await say(
            interaction,
            dataset_figures(assistant, data.stats),
            view=confirm_promote_view(assistant, force),
        )

    async def begin(self, interaction: discord.Interaction, assistant_id: int, force: bool) -> None:
        """The confirm button: post the progress message and run the promotion in the background."""
        from bot.discord.items import cancel_promotion_view

        actor = actor_of(interaction)
        # The refusals only, before the button is answered (Discord waits 3 s): they do not
        # depend on the chats' examples, which take an embedding each (the promotion adds them).
        assistant, _ = await self.core.promotions.to_promote(
            actor, assistant_id, force, with_examples=False
        )
        await interaction.response.edit_message(
            content=f"Promoting **{assistant.name}**: progress is shown below.", view=None
        )
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        progress = Progress(assistant.name)
        message = await channel.send(
            progress.render(),
            allowed_mentions=NO_MENTIONS,
            view=cancel_promotion_view(assistant),
        )
        where = {
            "frontend": FRONTEND,
            "channel_id": str(message.channel.id),
            "message_id": str(message.id),
        }
        shown = ThrottledMessage(message, self.bot.progress_interval)
        promotions = self.core.promotions
        self._run(
            assistant.name,
            shown,
            progress,
            functools.partial(
                promotions.promote,
                actor,
                assistant.name,
                where,
                force=force,
                resumable=True,
                poll_seconds=self.bot.promotion_poll_seconds,
            ),
        )

    async def cancel(self, interaction: discord.Interaction, assistant_id: int) -> None:
        """The progress message's Cancel button: the core cancels the job (or its evaluation);
        the progress message then ends saying so."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        actor = actor_of(interaction)
        promotion = await self.core.promotions.cancel(actor, assistant_id)
        await say(interaction, f"The promotion ({promotion.job}) is {promotion.status}.")

    def start_resuming(self) -> None:
        self._resuming = asyncio.create_task(self.resume())

    async def resume(self) -> None:
        """Go on showing the promotions this bot was following when it stopped: their progress
        messages are edited again (the job's events are read again from the start, so the loss
        curve is whole), and each ends with its evaluation and switch as usual."""
        try:
            followed = await self.core.promotions.to_resume(FRONTEND)
        except Exception:
            log.exception("could not read the promotions to resume")
            return
        for promotion, assistant in followed:
            follower = promotion.follower or {}
            try:
                channel = self.bot.get_partial_messageable(int(follower["channel_id"]))
                message = channel.get_partial_message(int(follower["message_id"]))
            except (KeyError, TypeError, ValueError):
                log.warning("promotion %s: its follower %r is unreadable", promotion.id, follower)
                continue
            progress = Progress(assistant.name, promotion.status, promotion.job_id)
            shown = ThrottledMessage(message, self.bot.progress_interval)
            log.info("resuming the promotion of %s (job %s)", assistant.name, promotion.job_id)
            self._run(
                assistant.name,
                shown,
                progress,
                functools.partial(
                    self.core.promotions.resume,
                    promotion,
                    poll_seconds=self.bot.promotion_poll_seconds,
                ),
            )

    def _run(
        self,
        name: str,
        shown: ThrottledMessage,
        progress: Progress,
        promotion: Callable[[OnStep], Coroutine[Any, Any, Promotion]],
    ) -> None:
        task = asyncio.create_task(self._show(name, shown, progress, promotion))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _show(
        self,
        name: str,
        shown: ThrottledMessage,
        progress: Progress,
        promotion: Callable[[OnStep], Coroutine[Any, Any, Promotion]],
    ) -> None:
        """Run the promotion, editing its message at each step; it ends with the result, or the
        reason it stopped. The bot closing stops it and drops the pending edit."""

        async def on_step(step: Step) -> None:
            progress.add(step)
            await shown.show(progress.render())

        try:
            ended = await promotion(on_step)
        except FewtuneError as exc:
            await shown.finish(f"**{name}**: the promotion stopped: {exc}")
            return
        except asyncio.CancelledError:
            shown.cancel()
            raise
        except Exception:
            log.exception("the promotion of %s failed", name)
            await shown.finish(f"**{name}**: {UNEXPECTED}")
            return
        if ended.status == "cancelled":
            await shown.finish(f"**{name}**: the promotion was cancelled.")
            return
        if ended.status != "succeeded":
            reason = ended.error or "no reason given"
            await shown.finish(f"**{name}**: the fine-tuning job ended {ended.status}: {reason}")
            return
        # Drawn on the loop: once per promotion, tens of milliseconds each.
        files = []
        png = loss_curve_png(progress.history, f"{name}: loss")
        if png:
            files.append(discord.File(io.BytesIO(png), filename="loss.png"))
        png = scores_png(ended.evaluation or {}, f"{name}: evaluation")
        if png:
            files.append(discord.File(io.BytesIO(png), filename="scores.png"))
        await shown.finish(self._final(name, ended), files)

    @staticmethod
    def _final(name: str, promotion: Promotion) -> str:
        lines = [f"**{name}** is fine-tuned: `{promotion.fine_tuned_model}`"]
        lines += evaluation_lines(promotion.evaluation or {})
        if promotion.switched:
            lines.append(
                f"**{name}** now answers with its fine-tuned model "
                f"(`/assistant rollback {name}` returns to the previous one)."
            )
        else:
            lines.append(f"**{name}** keeps its model (promote with force to switch anyway).")
        return "\n".join(lines)

    async def close(self) -> None:
        """Stop showing (the jobs themselves go on; `/assistant status` reads them, and the
        next start resumes following them)."""
        if self._resuming is not None:
            self._resuming.cancel()
            await asyncio.gather(self._resuming, return_exceptions=True)
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
