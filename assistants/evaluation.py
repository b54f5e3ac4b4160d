"""The held-out evaluation of a promotion: three settings scored item by item.

few-shot (the assistant as it is, with its k retrieved examples), the fine-tuned model alone
(k = 0) and the fine-tuned model with the retrieved examples (the hybrid). Each held-out chat's
prompt is built exactly as serving builds it (`Chat.compose`), leaving out what training left
out (leave one out). Per item: exact match (after trimming and case-folding), token F1 of the
answer generated at temperature 0, and, where the provider can score (assistants/likelihood.py),
the likelihood of the owner's answer and its margin: how much more likely the answer is after its
own prompt than after another held-out chat's prompt (`distractors`). Then, where a judge is set,
the judge's verdicts (assistants/judge.py). assistants/gate.py turns them into the stored
evaluation and decision.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from assistants.assistant import Assistant
from assistants.chat import Chat
from assistants.dataset import HeldOutItem
from assistants.errors import ProviderError
from assistants.gate import CANDIDATES, judge_scores, setting_scores, summarise
from assistants.judge import Judge, Judged
from assistants.likelihood import CannotScore, mean_log_prob
from assistants.providers import ModelRef, Providers

# Told after each setting is scored, e.g. "few_shot: 3/12 exact".
OnProgress = Callable[[str], Awaitable[None]]


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def token_f1(answer: str, target: str) -> float:
    a, t = normalise(answer).split(), normalise(target).split()
    if not a or not t:
        return float(a == t)
    common = sum(min(a.count(w), t.count(w)) for w in set(a))
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(t)
    return 2 * precision * recall / (precision + recall)


def distractors(items: list[HeldOutItem]) -> list[int] | None:
    """For each item, the held-out chat whose prompt its answer is also scored after: the next one
    (in the split's order, wrapping) with another question and another answer, so the margin
    compares the same answer tokens after its own question and after an unrelated one. None
    when some item has no such neighbour (one item, or every answer the same): the margin is
    then skipped for all, so every setting is scored on the same items."""
    n = len(items)
    targets = [normalise(item.target) for item in items]
    questions = [normalise(item.question) for item in items]
    found: list[int] = []
    for i in range(n):
        others = ((i + step) % n for step in range(1, n))
        j = next(
            (j for j in others if targets[j] != targets[i] and questions[j] != questions[i]), None
        )
        if j is None:
            return None
        found.append(j)
    return found


@dataclass(frozen=True)
class Setting:
    model: ModelRef
    k: int


class Evaluation:
    """Scores the settings of one promotion on its held-out items."""

    def __init__(
        self, chat: Chat, providers: Providers, executor: Executor, assistant: Assistant
    ) -> None:
        self.chat = chat
        self.providers = providers
        self.executor = executor
        self.assistant = assistant

    async def _compose(self, item: HeldOutItem, k: int) -> list[dict[str, str]]:
        call = functools.partial(
            self.chat.compose,
            self.assistant,
            item.history,
            item.question,
            k=k,
            exclude=item.exclude,
        )
        composed = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        return composed.messages

    async def _answer(self, model: ModelRef, messages: list[dict[str, str]]) -> str:
        max_tokens = self.assistant.max_tokens or self.providers.settings.chat.reply_tokens
        parts = []
        async for chunk in self.providers.stream_chat(model, messages, 0.0, max_tokens):
            parts.append(chunk.text)
        return "".join(parts).strip()

    async def run(
        self,
        items: list[HeldOutItem],
        settings: dict[str, Setting],
        judge: ModelRef | None,
        on_progress: OnProgress | None = None,
    ) -> dict[str, Any]:
        """The summarised evaluation (assistants/gate.py's layout and decision)."""
        notes: list[str] = []
        scoring = True  # until the provider says it cannot score
        others = distractors(items)
        if others is None and items:
            notes.append(
                "No two held-out chats differ in question and answer, so the likelihood margin "
                "was skipped."
            )
        answers: dict[str, list[str]] = {}
        scored: dict[str, dict[str, Any]] = {}
        for label, setting in settings.items():
            exact: list[int] = []
            f1: list[float] = []
            log_probs: list[float] = []
            margins: list[float] = []
            answers[label] = []
            prompts = [await self._compose(item, setting.k) for item in items]
            paired: list[int | None] = list(others) if others else [None] * len(items)
            for item, messages, other in zip(items, prompts, paired, strict=True):
                answer = await self._answer(setting.model, messages)
                answers[label].append(answer)
                exact.append(int(normalise(answer) == normalise(item.target)))
                f1.append(token_f1(answer, item.target))
                if scoring:
                    try:
                        own = await mean_log_prob(
                            self.providers, setting.model, messages, item.target
                        )
                        log_probs.append(own)
                        if other is not None:
                            after_other = await mean_log_prob(
                                self.providers, setting.model, prompts[other], item.target
                            )
                            margins.append(own - after_other)
                    except CannotScore as exc:
                        scoring = False
                        notes.append(str(exc))
            scored[label] = {"model": str(setting.model), "k": setting.k, "exact": exact, "f1": f1}
            scored[label].update(log_prob=log_probs, margin=margins)
            if on_progress:
                await on_progress(f"{label}: {sum(exact)}/{len(items)} exact")
        judged = await self._judge(items, answers, judge, notes, on_progress)
        evaluation = self.providers.settings.evaluation
        return summarise(
            {
                label: setting_scores(
                    s["model"],
                    s["k"],
                    s["exact"],
                    s["f1"],
                    s["log_prob"] if scoring else None,
                    s["margin"] if scoring and others is not None else None,
                )
                for label, s in scored.items()
            },
            alpha=evaluation.alpha,
            floor=evaluation.min_held_out,
            judge=judged,
            notes=notes,
        )

    async def _judge(
        self,
        items: list[HeldOutItem],
        answers: dict[str, list[str]],
        model: ModelRef | None,
        notes: list[str],
        on_progress: OnProgress | None,
    ) -> dict[str, Any] | None:
        """Each candidate against few-shot, item by item, in both orders; None (and a note)
        when the judge cannot be reached: the gate decides on the next metric."""
        if model is None:
            return None
        judge = Judge(self.providers, model)
        found: dict[str, Any] = {"model": str(model)}
        try:
            for candidate in CANDIDATES:
                judged = Judged()
                for i, item in enumerate(items):
                    await judge.compare(
                        item.question,
                        item.target,
                        answers["few_shot"][i],
                        answers[candidate][i],
                        judged,
                    )
                found[candidate] = judge_scores(
                    str(model), judged.verdicts, judged.disagreements, judged.unreadable
                )
                if on_progress:
                    s = found[candidate]
                    await on_progress(
                        f"judge, {candidate}: {s['wins']} wins, {s['ties']} ties, "
                        f"{s['losses']} losses"
                    )
        except ProviderError as exc:
            notes.append(
                f"The judge {model} was left out, so the gate went on to the next metric: {exc}"
            )
            return None
        return found
