"""The terminal's chats (`fewtune chat`, `fewtune demo`): the messages a user types."""

from __future__ import annotations

from collections.abc import Iterator

import typer


def typed_messages(
    help_line: str, passed: tuple[str, ...] = (), first_note: str | None = None
) -> Iterator[str]:
    """The messages the user types, stripped, until /exit, /quit, Ctrl-D or Ctrl-C.

    Blank lines are skipped; a command in `passed` is handed on like a message; any other
    one-word /command is answered with `help_line`. `first_note` (the wait for the local model
    server) is shown before the first message is handed on.
    """
    while True:
        try:
            # Read on the loop: nothing else runs on it between messages (the model calls have
            # a loop of their own).
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line in passed:
            yield line
            continue
        if line.startswith("/") and " " not in line:
            typer.secho(f"{line}: {help_line}", dim=True)
            continue
        if first_note:
            typer.secho(f"({first_note})", dim=True)
            first_note = None
        yield line
