"""The prompt: system = instructions (then the knowledge passages, numbered [1], [2] … with
their sources, and a request to cite them); the selected examples in the assistant's layout; the
conversation's history; the new message. A token budget trims history first (oldest turns
first), then examples (least relevant first), then knowledge (least relevant first), and says
what it dropped. Without knowledge the prompt is what it was before knowledge existed.

Layouts (the assistant's `layout` setting; measured in docs/benchmarks.md):
- `turns`: each example as its own user/assistant turns, before the history.
- `system`: the examples as one block in the system message, after the instructions
  ("Examples:" then "Input: …" / "Output: …" lines, a blank line between examples).
- `pairs`: the examples and the message in one user message, as "Input: …" / "Output: …"
  pairs ending with "Input: <message>" and "Output:".
With no example in the prompt every layout sends the same: the instructions and the message.

Token counts here are estimates (no tokenizer in the core, which reaches models only through the
API): a UTF-8 byte count divided by 3, plus 4 per message for the chat template. This
over-counts English (about 4 bytes a token) and matches CJK scripts (3 bytes a character, about
one token), so the budget errs on the safe side. The provider's own counts are stored per reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PER_MESSAGE = 4
LAYOUTS = ("turns", "system", "pairs")
EXAMPLES_HEADER = "\n\nExamples:\n"  # after the instructions, in the `system` layout
BETWEEN = "\n\n"  # between two examples in one block
KNOWLEDGE_HEADER = (
    "\n\nAnswer from these sources where they help, and cite each one you use by its "
    "number, like [1]:\n"
)


def text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // 3)


def estimate_tokens(text: str) -> int:
    return text_tokens(text) + PER_MESSAGE


def messages_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


def as_pairs(turns: list[dict[str, str]]) -> str:
    """An example's turns as text: "Input: …" for each user turn, "Output: …" for each answer."""
    return "\n".join(
        f"{'Input' if m['role'] == 'user' else 'Output'}: {m['content']}" for m in turns
    )


def pairs_question(message: str) -> str:
    return f"Input: {message}\nOutput:"


def source_block(number: int, label: str, text: str) -> str:
    """One knowledge passage as the system message quotes it: its marker and source, its text."""
    return f"[{number}] {label}\n{text}"


def with_knowledge(instructions: str, knowledge: list[tuple[str, str]]) -> str:
    """The instructions followed by the passages (label, text), numbered from 1 in that order."""
    if not knowledge:
        return instructions
    blocks = (source_block(n, label, text) for n, (label, text) in enumerate(knowledge, 1))
    return instructions + KNOWLEDGE_HEADER + BETWEEN.join(blocks)


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    example_ids: list[int]
    estimated_tokens: int
    trimmed: dict[str, int] = field(default_factory=dict)  # history_messages, examples, knowledge
    knowledge_ids: list[int] = field(default_factory=list)  # kept, in marker order ([1] first)


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


def _example_costs(layout: str, examples: list[list[dict[str, str]]]) -> list[int]:
    """What each example adds to the prompt, in estimated tokens. In one block the parts' byte
    counts are rounded up one by one, which never undercounts the block."""
    if layout == "turns":
        return [messages_tokens(turns) for turns in examples]
    return [text_tokens(as_pairs(turns) + BETWEEN) for turns in examples]


def _block_overhead(layout: str, message: str) -> int:
    """What holding at least one example adds besides the examples themselves."""
    if layout == "system":
        return text_tokens(EXAMPLES_HEADER)
    if layout == "pairs":
        return text_tokens(pairs_question(message)) - text_tokens(message)
    return 0


def _layout(
    layout: str,
    instructions: str,
    examples: list[list[dict[str, str]]],
    history: list[dict[str, str]],
    message: str,
) -> list[dict[str, str]]:
    """The messages, `examples` already in prompt order."""
    system = instructions
    question = message
    example_turns: list[dict[str, str]] = []
    if examples and layout == "turns":
        example_turns = [m for turns in examples for m in turns]
    elif examples and layout == "system":
        system += EXAMPLES_HEADER + BETWEEN.join(as_pairs(turns) for turns in examples)
    elif examples and layout == "pairs":
        question = BETWEEN.join([*(as_pairs(turns) for turns in examples), pairs_question(message)])
    return [
        {"role": "system", "content": system},
        *example_turns,
        *history,
        {"role": "user", "content": question},
    ]


def build_prompt(
    instructions: str,
    examples: list[tuple[int, list[dict[str, str]]]],
    history: list[dict[str, str]],
    message: str,
    budget: int,
    *,
    layout: str = "turns",
    best_first: bool = False,
    knowledge: Sequence[tuple[int, str, str]] = (),
) -> Prompt:
    """Assemble the messages within `budget` estimated tokens.

    `examples` are (id, turns) best first; in the prompt the best comes last, nearest the
    message, where a small model attends to it most (`best_first` turns that round, to measure
    it). `history` is oldest first. `layout` is one of LAYOUTS. `knowledge` are passages
    (id, label, text) best first, numbered in that order; the budget drops the last first, so a
    kept passage keeps its number.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    fixed = estimate_tokens(instructions) + estimate_tokens(message)
    if fixed > budget:
        raise PromptTooLong(fixed, budget)
    example_costs = _example_costs(layout, [turns for _, turns in examples])
    overhead = _block_overhead(layout, message)
    history_costs = [estimate_tokens(m["content"]) for m in history]
    kept_examples = len(examples)
    kept_history_from = 0
    knowledge_costs = [
        text_tokens(source_block(n, label, text) + BETWEEN)
        for n, (_, label, text) in enumerate(knowledge, 1)
    ]
    kept_knowledge = len(knowledge)

    def knowledge_cost(kept: int) -> int:
        return sum(knowledge_costs[:kept]) + (text_tokens(KNOWLEDGE_HEADER) if kept else 0)

    def examples_cost(kept: int) -> int:
        return sum(example_costs[:kept]) + (overhead if kept else 0)

    total = (
        fixed + examples_cost(kept_examples) + sum(history_costs) + knowledge_cost(kept_knowledge)
    )
    # Drop history from the oldest end, keeping turns in user/assistant pairs where possible.
    while total > budget and kept_history_from < len(history):
        total -= history_costs[kept_history_from]
        kept_history_from += 1
    # Kept history starts with a user turn: a leading reply would answer a question not shown.
    while 0 < kept_history_from < len(history) and history[kept_history_from]["role"] != "user":
        total -= history_costs[kept_history_from]
        kept_history_from += 1
    while total > budget and kept_examples > 0:
        total -= examples_cost(kept_examples) - examples_cost(kept_examples - 1)
        kept_examples -= 1
    while total > budget and kept_knowledge > 0:
        total -= knowledge_cost(kept_knowledge) - knowledge_cost(kept_knowledge - 1)
        kept_knowledge -= 1
    quoted = [(label, text) for _, label, text in knowledge[:kept_knowledge]]
    chosen = [turns for _, turns in examples[:kept_examples]]
    messages = _layout(
        layout,
        with_knowledge(instructions, quoted),
        chosen if best_first else chosen[::-1],
        history[kept_history_from:],
        message,
    )
    trimmed = {}
    if kept_history_from:
        trimmed["history_messages"] = kept_history_from
    if kept_examples < len(examples):
        trimmed["examples"] = len(examples) - kept_examples
    if kept_knowledge < len(knowledge):
        trimmed["knowledge"] = len(knowledge) - kept_knowledge
    return Prompt(
        messages=messages,
        example_ids=[i for i, _ in examples[:kept_examples]],
        estimated_tokens=messages_tokens(messages),
        trimmed=trimmed,
        knowledge_ids=[i for i, _, _ in knowledge[:kept_knowledge]],
    )
