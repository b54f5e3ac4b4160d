"""/assistant promote in Discord: the dataset's figures and a confirm button, then ONE message
that shows the job's progress (status, step, loss; edited at most about once a second) and ends
with the evaluation and a loss-curve image. The job is followed by a background task of the bot,
so the interaction is answered at once and the bot goes on serving everyone else meanwhile.

Every decision is the core's (`core.promotions`: dataset, start, follow, evaluate, switch); this
module only turns its events into a message.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from assistants import Actor, Assistant, FewtuneError
from assistants.promotion import MIN_TRAIN_CHATS, Promotion
from bot.discord.actors import actor_of
from bot.discord.loss_chart import loss_curve_png
from bot.discord.progress import ThrottledMessage
from bot.discord.replies import NO_MENTIONS, UNEXPECTED, say

if TYPE_CHECKING:
    from bot.discord.client import FewtuneBot

log = logging.getLogger("fewtune.discord")
T = TypeVar("T")
FRONTEND = "discord"  # how this frontend names itself in a promotion's follower
SETTINGS = (
    ("few_shot", "few-shot (as it is)"),
    ("fine_tuned", "fine-tuned alone"),
    ("fine_tuned_with_examples", "fine-tuned + examples"),
)


def dataset_figures(assistant: Assistant, stats: dict[str, Any]) -> str:
    """What a promotion of `assistant` would train on, in a few lines."""
    lines = [
        f"**Promote {assistant.name}?** Its own model is fine-tuned (LoRA) on:",
        f"- {stats.get('train_chats', 0)} training chats, {stats.get('train_tokens', 0):,} tokens "
        f"({stats.get('examples', 0)} from examples, {stats.get('conversations', 0)} from "
        "conversations)",
        f"- {stats.get('held_out_chats', 0)} held-out chats for the evaluation",
    ]
    removed = {k: v for k, v in (stats.get("filters") or {}).items() if v}
    if removed:
        lines.append(
            "- filtered: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in removed.items())
        )
    lines.append(
        f"Base model: `{assistant.model}`. It switches only if the fine-tuned model is not worse."
    )
    return "\n".join(lines)


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    lines = [f"Evaluation on {evaluation.get('items', 0)} held-out chats (exact match · token F1):"]
    for key, label in SETTINGS:
        if key in evaluation:
            r = evaluation[key]
            lines.append(f"- {label}: {r['exact_match']:.0%} · {r['token_f1']:.2f}")
    return lines


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
    """What the progress message shows, from the core's events."""

    name: str
    status: str = "starting"
    job_id: str | None = None
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # every metrics event's data

    def add(self, event: dict[str, Any]) -> None:
        self.status = event.get("status") or self.status
        data = event.get("data") or {}
        if event.get("type") == "metrics" and data:
            # Validation loss comes every few steps: keep showing the latest known one.
            self.metrics.update({k: v for k, v in data.items() if v is not None})
            self.history.append(dict(data))
        elif event.get("message"):
            self.note = str(event["message"])

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
    """Starts promotions from Discord and follows each in a background task of the bot."""

    def __init__(self, bot: FewtuneBot) -> None:
        self.bot = bot
        self.core = bot.core
        self.running: dict[int, asyncio.Task[None]] = {}  # assistant id -> its follower
        self._resuming: asyncio.Task[None] | None = None

    async def ask(self, interaction: discord.Interaction, name: str, force: bool) -> None:
        """The dataset's figures and a confirm button (ephemeral; refusals too)."""
        from bot.discord.items import confirm_promote_view

        await interaction.response.defer(ephemeral=True, thinking=True)
        assistant, data = await asyncio.to_thread(
            self.core.promotions.dataset, actor_of(interaction), name
        )
        if assistant.id in self.running:
            await say(interaction, f"A promotion of **{assistant.name}** is already running.")
            return
        train = data.stats.get("train_chats", 0)
        if train == 0 or (train < MIN_TRAIN_CHATS and not force):
            await say(
                interaction,
                f"**{assistant.name}** has {train} training chats; a promotion needs at least "
                f"{MIN_TRAIN_CHATS} (add examples or collect conversations, or use force).",
            )
            return
        await say(
            interaction,
            dataset_figures(assistant, data.stats),
            view=confirm_promote_view(assistant, force),
        )

    async def begin(self, interaction: discord.Interaction, assistant_id: int, force: bool) -> None:
        """The confirm button: post the progress message and follow the job in the background."""
        actor = actor_of(interaction)
        assistant = await asyncio.to_thread(self.core.assistants.by_id, assistant_id)
        await asyncio.to_thread(self.core.assistants.get_managed, actor, assistant.name, "promote")
        if assistant.id in self.running:
            await say(interaction, f"A promotion of **{assistant.name}** is already running.")
            return
        await interaction.response.edit_message(
            content=f"Promoting **{assistant.name}**: progress is shown below.", view=None
        )
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        progress = Progress(assistant.name)
        message = await channel.send(progress.render(), allowed_mentions=NO_MENTIONS)
        self._run(assistant.id, self._follow(actor, assistant.name, force, message, progress))

    def _run(self, assistant_id: int, following: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(following)
        self.running[assistant_id] = task
        task.add_done_callback(lambda _: self.running.pop(assistant_id, None))

    def start_resuming(self) -> None:
        self._resuming = asyncio.create_task(self.resume())

    async def resume(self) -> None:
        """Go on following the promotions this bot was following when it stopped: their
        progress messages are edited again (the job's events are read again from the start, so
        the loss curve is whole), and each ends with its evaluation and switch as usual. They go
        on as the member who started them, with the permissions they had then."""
        try:
            followed = await asyncio.to_thread(self.core.promotions.followed, FRONTEND)
        except Exception:
            log.exception("could not read the promotions to resume")
            return
        for promotion, assistant in followed:
            follower = promotion.follower or {}
            if assistant.id in self.running:
                continue
            try:
                actor = Actor(
                    str(follower["user_id"]),
                    follower.get("guild_id"),
                    bool(follower.get("can_manage_guild")),
                )
                channel = self.bot.get_partial_messageable(int(follower["channel_id"]))
                message = channel.get_partial_message(int(follower["message_id"]))
            except (KeyError, TypeError, ValueError):
                log.warning("promotion %s: its follower %r is unreadable", promotion.id, follower)
                continue
            progress = Progress(assistant.name)
            progress.job_id, progress.status = promotion.job_id, promotion.status
            shown = ThrottledMessage(message, self.bot.progress_interval)
            force = bool(follower.get("force"))
            log.info("resuming the promotion of %s (job %s)", assistant.name, promotion.job_id)
            self._run(
                assistant.id,
                self._see_through(actor, assistant.name, force, shown, progress, promotion.id),
            )

    async def _follow(
        self,
        actor: Actor,
        name: str,
        force: bool,
        message: discord.Message,
        progress: Progress,
    ) -> None:
        shown = ThrottledMessage(message, self.bot.progress_interval)
        started = await self._or_say_why(
            name, shown, self._start(actor, name, force, message, shown, progress)
        )
        if started is not None:
            await self._see_through(actor, name, force, shown, progress, started)

    async def _start(
        self,
        actor: Actor,
        name: str,
        force: bool,
        message: discord.Message,
        shown: ThrottledMessage,
        progress: Progress,
    ) -> int:
        """Start the promotion and record where it is followed; its id."""
        promotion = await self.core.promotions.start(actor, name, force=force)
        progress.job_id, progress.status = promotion.job_id, promotion.status
        await shown.show(progress.render())
        # Recorded, so that a restarted bot goes on following it (`resume`).
        follower = {
            "frontend": FRONTEND,
            "channel_id": str(message.channel.id),
            "message_id": str(message.id),
            "user_id": actor.user_id,
            "guild_id": actor.guild_id,
            "can_manage_guild": actor.can_manage_guild,
            "force": force,
        }
        await asyncio.to_thread(self.core.promotions.follow_from, promotion.id, follower)
        return promotion.id

    async def _see_through(
        self,
        actor: Actor,
        name: str,
        force: bool,
        shown: ThrottledMessage,
        progress: Progress,
        promotion_id: int,
    ) -> None:
        """Follow the job to its end, evaluate, switch, and show the result; then the
        promotion is no longer followed. Stopped by the bot closing, it stays followed."""
        await self._or_say_why(name, shown, self._to_the_end(actor, name, force, shown, progress))
        try:
            await asyncio.to_thread(self.core.promotions.follow_from, promotion_id, None)
        except Exception:
            log.exception("could not mark the promotion of %s as seen through", name)

    async def _or_say_why(
        self, name: str, shown: ThrottledMessage, step: Coroutine[Any, Any, T]
    ) -> T | None:
        """Run one step of a promotion; a refusal or a failure ends its message with the reason
        (None). The bot closing stops it and drops the pending edit."""
        try:
            return await step
        except FewtuneError as exc:
            await shown.finish(f"**{name}**: the promotion stopped: {exc}")
        except asyncio.CancelledError:
            shown.cancel()
            raise
        except Exception:
            log.exception("the promotion of %s failed", name)
            await shown.finish(f"**{name}**: {UNEXPECTED}")
        return None

    async def _to_the_end(
        self, actor: Actor, name: str, force: bool, shown: ThrottledMessage, progress: Progress
    ) -> None:
        promotions = self.core.promotions

        async def on_progress(event: dict[str, Any]) -> None:
            progress.add(event)
            await shown.show(progress.render())

        promotion = await promotions.follow(
            actor, name, on_progress, poll_seconds=self.bot.promotion_poll_seconds
        )
        if promotion.status != "succeeded":
            reason = promotion.error or "no reason given"
            await shown.finish(
                f"**{name}**: the fine-tuning job ended {promotion.status}: {reason}"
            )
            return
        await on_progress({"status": "evaluating", "message": "Evaluating on held-out chats…"})
        await promotions.evaluate(actor, name, on_progress)
        promotion = await asyncio.to_thread(promotions.switch, actor, name, force)
        png = await asyncio.to_thread(loss_curve_png, progress.history, f"{name}: loss")
        file = discord.File(io.BytesIO(png), filename="loss.png") if png else None
        await shown.finish(self._final(name, promotion), file)

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
            lines.append(
                "The fine-tuned model scored lower than few-shot, so the assistant keeps "
                "its model (promote with force to switch anyway)."
            )
        return "\n".join(lines)

    async def close(self) -> None:
        """Stop following (the jobs themselves go on; `/assistant status` reads them, and the
        next start resumes following them)."""
        if self._resuming is not None:
            self._resuming.cancel()
            await asyncio.gather(self._resuming, return_exceptions=True)
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
