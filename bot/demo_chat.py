"""The demo's chat in the terminal: each message goes to the few-shot `numbers` and to its
promoted twin `numbers-tuned`, and both answers are shown one under the other, each with the
examples it was given. Rendering only: the core answers (`core.chat.answer`), as in `fewtune chat`.
"""

from __future__ import annotations

import typer

from assistants import TERMINAL, Assistant, Core, FewtuneError, Origin, Reply
from bot.terminal import typed_messages

EXAMPLES_SHOWN = 4


def describe(assistant: Assistant) -> str:
    """How an assistant answers, in a few words: "few-shot, 4 examples (similarity)"."""
    how = "promoted: its LoRA adapter" if assistant.fine_tuned_model else "few-shot"
    return f"{how}, {assistant.k} examples ({assistant.selector})"


def answer_line(width: int, name: str, reply: Reply) -> str:
    """`name  answer   [examples: word → digits, …]`."""
    used = ", ".join(f"{e.input} → {e.output}" for e in reply.examples[:EXAMPLES_SHOWN])
    return f"  {name:<{width}}  {reply.text or '(nothing)'}    [examples: {used or 'none'}]"


async def side_by_side(core: Core, names: list[str]) -> None:
    """Read messages until /exit or Ctrl-D; each is answered by every assistant in `names`."""
    assistants = [core.assistants.get(TERMINAL, name) for name in names]
    width = max(len(name) for name in names)
    typer.secho("Each message is answered by both assistants: /exit or Ctrl-D ends.", dim=True)
    for assistant in assistants:
        typer.secho(
            f"  {assistant.name:<{width}}  {describe(assistant)} ({assistant.active_model})",
            dim=True,
        )
    for text in assistants[0].starters:
        typer.secho(f"  try: {text}", dim=True)
    conversations: dict[str, int] = {}
    note = core.providers.starting_note(assistants[0].active_model)
    for line in typed_messages("/exit or Ctrl-D ends.", first_note=note):
        for assistant in assistants:
            known = conversations.get(assistant.name)
            origin = Origin(conversation_id=known) if known else Origin(assistant=assistant.name)
            try:
                reply = await core.chat.answer(TERMINAL, origin, line)
            except FewtuneError as exc:
                typer.secho(f"  {assistant.name:<{width}}  Error: {exc}", fg=typer.colors.RED)
                continue
            assert reply is not None  # a named assistant always answers
            conversations[assistant.name] = reply.conversation_id
            if reply.error is not None:
                typer.secho(
                    f"  {assistant.name:<{width}}  Error: {reply.error}", fg=typer.colors.RED
                )
                continue
            typer.echo(answer_line(width, assistant.name, reply))
