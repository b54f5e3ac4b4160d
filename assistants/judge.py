"""The optional judge of the evaluation gate: a chat model that compares two answers.

For each held-out chat the judge sees the message, the owner's reference answer and two
candidates (few-shot's answer and a fine-tuned setting's), with the prompt in
assistants/judge_prompt.md. Each pair is asked in both orders (A/B, then B/A): a judge that
prefers whichever comes first (position bias) then disagrees with itself, and a disagreement
counts as a tie. A verdict that cannot be read counts as a tie too (and is counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from assistants.providers import ModelRef, Providers

PROMPT = (Path(__file__).parent / "judge_prompt.md").read_text(encoding="utf-8")
VERDICT = re.compile(r"verdict\W*(a|b|tie)\b", re.IGNORECASE)
JUDGE_TOKENS = 200  # room for a judge that explains itself before its verdict line


def judge_prompt(question: str, reference: str, answer_a: str, answer_b: str) -> str:
    """The judge's prompt for one ordered pair (plain replacement: the texts may hold braces)."""
    text = PROMPT
    for key, value in (
        ("{question}", question),
        ("{reference}", reference),
        ("{answer_a}", answer_a),
        ("{answer_b}", answer_b),
    ):
        text = text.replace(key, value)
    return text


def parse_verdict(reply: str) -> str | None:
    """ "A", "B" or "tie" from a judge's reply (its last `Verdict:` line, or a reply that is
    only the verdict); None when it says none of them."""
    found = VERDICT.findall(reply)
    # No verdict line: a reply that is only the verdict ("B", "Answer A.", "**tie**").
    bare = reply.strip().strip("`*.:!\"' ").removeprefix("Answer ").strip()
    word = (found[-1] if found else bare).casefold()
    return {"a": "A", "b": "B", "tie": "tie"}.get(word)


@dataclass
class Judged:
    """A candidate against few-shot, item by item: 1 the candidate is better (in both orders),
    -1 few-shot is, 0 a tie (said so, a disagreement between the orders, or unreadable)."""

    verdicts: list[int] = field(default_factory=list)
    disagreements: int = 0
    unreadable: int = 0


class Judge:
    """Asks one judge model, through the providers' door like any chat."""

    def __init__(self, providers: Providers, model: ModelRef) -> None:
        self.providers = providers
        self.model = model

    async def _ask(self, question: str, reference: str, a: str, b: str) -> str | None:
        messages = [{"role": "user", "content": judge_prompt(question, reference, a, b)}]
        parts = []
        async for chunk in self.providers.stream_chat(self.model, messages, 0.0, JUDGE_TOKENS):
            parts.append(chunk.text)
        return parse_verdict("".join(parts))

    async def compare(
        self, question: str, reference: str, few_shot: str, candidate: str, judged: Judged
    ) -> None:
        """Judge one item in both orders and add its verdict to `judged` (ProviderError when the
        judge cannot be reached)."""
        first = await self._ask(question, reference, few_shot, candidate)  # candidate is B
        second = await self._ask(question, reference, candidate, few_shot)  # candidate is A
        judged.unreadable += (first is None) + (second is None)
        # Each verdict from the candidate's side: 1 it won, -1 few-shot won, 0 a tie.
        ours = {"B": 1, "A": -1}.get(first or "", 0), {"A": 1, "B": -1}.get(second or "", 0)
        if ours[0] == ours[1]:
            judged.verdicts.append(ours[0])
        else:
            judged.disagreements += 1
            judged.verdicts.append(0)
