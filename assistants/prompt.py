"""The prompt: system = instructions; the selected examples as user/assistant turns; the
conversation's history; the new message. A token budget trims history first (oldest turns
first), then examples (least relevant first), and says what it dropped.

Token counts here are estimates (no tokenizer in the core, which reaches models only through the
API): a UTF-8 byte count divided by 3, plus 4 per message for the chat template. This
over-counts English (about 4 bytes a token) and matches CJK scripts (3 bytes a character, about
one token), so the budget errs on the safe side. The provider's own counts are stored per reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // 3) + PER_MESSAGE


def messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    example_ids: list[int]
    estimated_tokens: int
    trimmed: dict[str, int] = field(default_factory=dict)  # history_messages, examples dropped


class PromptTooLong(ValueError):
    def __init__(self, needed: int, budget: int):
        super().__init__(f"{needed} > {budget}")
        self.needed = needed
        self.budget = budget


def last_turns(history: list[dict[str, str]], turns: int | None) -> list[dict[str, str]]:
    """The last `turns` exchanges of `history` (oldest first); None keeps it all.

    An exchange is a user message and what answered it, so it starts at a user message: a
    message whose reply failed (left out of history) is an exchange of its own.
    """
    if turns is None:
        return history
    if turns <= 0:
        return []
    starts = [i for i, m in enumerate(history) if m["role"] == "user"]
    return history[starts[-turns] :] if len(starts) >= turns else history


def build_prompt(
    instructions: str,
    examples: list[tuple[int, list[dict[str, str]]]],
    history: list[dict[str, str]],
    message: str,
    budget: int,
) -> Prompt:
    """Assemble the messages within `budget` estimated tokens.

    `examples` are (id, turns) best first; in the prompt the best comes last, nearest the
    message, where a small model attends to it most. `history` is oldest first.
    """
    system = {"role": "system", "content": instructions}
    user = {"role": "user", "content": message}
    fixed = estimate_tokens(instructions) + estimate_tokens(message)
    if fixed > budget:
        raise PromptTooLong(fixed, budget)
    example_costs = [messages_tokens(turns) for _, turns in examples]
    history_costs = [estimate_tokens(m["content"]) for m in history]
    kept_examples = len(examples)
    kept_history_from = 0
    total = fixed + sum(example_costs) + sum(history_costs)
    # Drop history from the oldest end, keeping turns in user/assistant pairs where possible.
    while total > budget and kept_history_from < len(history):
        total -= history_costs[kept_history_from]
        kept_history_from += 1
    # Kept history starts with a user turn: a leading reply would answer a question not shown.
    while 0 < kept_history_from < len(history) and history[kept_history_from]["role"] != "user":
        total -= history_costs[kept_history_from]
        kept_history_from += 1
    while total > budget and kept_examples > 0:
        kept_examples -= 1
        total -= example_costs[kept_examples]
    messages = [system]
    for _, turns in reversed(examples[:kept_examples]):
        messages.extend(turns)
    messages.extend(history[kept_history_from:])
    messages.append(user)
    trimmed = {}
    if kept_history_from:
        trimmed["history_messages"] = kept_history_from
    if kept_examples < len(examples):
        trimmed["examples"] = len(examples) - kept_examples
    return Prompt(
        messages=messages,
        example_ids=[i for i, _ in examples[:kept_examples]],
        estimated_tokens=total,
        trimmed=trimmed,
    )
