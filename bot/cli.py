"""The `fewtune` command line: a thin layer over the core. Every error a user can cause, a
mistyped option included, prints one line (no traceback) and exits 1."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

# typer parses with its own copy of click: its context and errors are that copy's, not the
# `click` package's (whose get_current_context finds no context under typer).
from typer._click import exceptions as usage
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from assistants import TERMINAL, Core, FewtuneError, Origin, ProviderError, Source, sources_line
from assistants.assistant import DEFAULT_LAYOUT
from assistants.demo import TWIN_NAME
from assistants.promotion import Step
from bot.demo_chat import side_by_side
from bot.evaluation_report import report_lines
from bot.terminal import typed_messages
from bot.wording import counted, file_size
from storage import Settings


class OneLineErrors(TyperGroup):
    """The root command: click's usage errors (a bad option value, a missing argument, an
    unknown command) become one `Error:` line and exit 1, like the core's errors, instead of
    click's boxed help and exit 2. Asking for help (`--help`, a bare `fewtune`) keeps its output."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run_typer = functools.partial(
            super().main, args, prog_name, complete_var, False, windows_expand_args, **extra
        )
        if not standalone_mode:
            return run_typer()
        try:
            code = run_typer()
        except usage.NoArgsIsHelpError as exc:
            exc.show()  # the help, as before
            sys.exit(exc.exit_code)
        except usage.UsageError as exc:
            where = f" See `{exc.ctx.command_path} --help`." if exc.ctx else ""
            fail(sentence(exc.format_message()) + where, exit=sys.exit)
        except usage.ClickException as exc:
            fail(sentence(exc.format_message()), exit=sys.exit)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def sentence(message: str) -> str:
    """click's message on one line, ending as a sentence."""
    text = " ".join(message.split())
    return text if text.endswith((".", "!", "?")) else text + "."


app = typer.Typer(
    name="fewtune",
    cls=OneLineErrors,
    help="Custom assistants from instructions and few-shot examples, then their own LoRA models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
assistant_app = typer.Typer(help="Create and manage assistants.", no_args_is_help=True)
example_app = typer.Typer(
    help="Add, import, export and search an assistant's examples.", no_args_is_help=True
)
app.add_typer(assistant_app, name="assistant")
knowledge_app = typer.Typer(
    help="Add, list, remove and search the files an assistant answers from.", no_args_is_help=True
)
app.add_typer(example_app, name="example")
app.add_typer(knowledge_app, name="knowledge")

T = TypeVar("T")


class Selector(StrEnum):
    similarity = "similarity"
    mmr = "mmr"
    coverage = "coverage"
    random = "random"
    fixed = "fixed"


class Layout(StrEnum):  # assistants.prompt.LAYOUTS
    turns = "turns"
    system = "system"
    pairs = "pairs"


class Visibility(StrEnum):
    private = "private"
    guild = "guild"
    public = "public"


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def fail(message: str, exit: Callable[[int], NoReturn] | None = None) -> NoReturn:
    """Print one `Error:` line and exit 1 (through `exit` where typer's Exit is not caught)."""
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    if exit is not None:
        exit(1)
    raise typer.Exit(1)


def open_core() -> Core:
    """The core a command works on: `Core.open()`, or the factory a caller passed as the click
    context's `obj` (tests hand in one that shares their loaded embedder)."""
    context = get_current_context(silent=True)
    opener: Callable[[], Core] = (context.obj if context else None) or Core.open
    try:
        return opener()
    except FewtuneError as exc:
        fail(str(exc))


def open_settings() -> Settings:
    """The settings, or one clean error line when fewtune.toml is wrong."""
    from storage import load_settings

    try:
        return load_settings()
    except FewtuneError as exc:
        fail(str(exc))


def run(call: Coroutine[Any, Any, T]) -> T:
    """Await one core call (`core.api.…`) or a command's async body; a FewtuneError, whether the
    user's or an outage, becomes one clean line."""
    try:
        return asyncio.run(call)
    except FewtuneError as exc:
        fail(str(exc))


def read_input(file: Path) -> bytes:
    """A file's bytes, or one clean error line when it cannot be read."""
    try:
        return file.read_bytes()
    except OSError as exc:
        fail(f"Cannot read {file}: {exc.strerror}.")


def write_output(text: str, output: Path | None) -> bool:
    """Print `text`, or write it to `output` whole (a temp file, then a rename); True if written."""
    if output is None:
        sys.stdout.write(text)
        return False
    tmp = output.with_name(output.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        fail(f"Cannot write {output}: {exc.strerror}.")
    return True


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


HISTORY_HELP = "Earlier exchanges in each prompt: a number (0: each message alone) or all."
LAYOUT_HELP = (
    "How the examples sit in the prompt: turns (user/assistant turns), system (one block in "
    "the system message) or pairs (Input:/Output: pairs with the message)."
)
NameArg = Annotated[str, typer.Argument(help="The assistant's name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


# -- assistants ------------------------------------------------------------------------------


@assistant_app.command("create")
def assistant_create(
    name: NameArg,
    instructions: Annotated[str, typer.Option(help="What the assistant does (the system prompt).")],
    description: Annotated[str, typer.Option(help="One line shown in lists.")] = "",
    k: Annotated[int, typer.Option(help="Examples put in each prompt (0-25).")] = 4,
    selector: Annotated[
        Selector, typer.Option(help="How examples are chosen.")
    ] = Selector.similarity,
    model: Annotated[
        str | None, typer.Option(help="provider:model; default from settings.")
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0-2).")] = 0.7,
    max_tokens: Annotated[int | None, typer.Option(help="Longest reply in tokens.")] = None,
    history: Annotated[str | None, typer.Option(help=HISTORY_HELP)] = None,
    layout: Annotated[Layout, typer.Option(help=LAYOUT_HELP)] = Layout(DEFAULT_LAYOUT),
    visibility: Annotated[Visibility, typer.Option(help="Who may use it.")] = Visibility.private,
    starter: Annotated[
        list[str] | None, typer.Option(help="A conversation starter (up to 4).")
    ] = None,
) -> None:
    """Create an assistant."""
    core = open_core()
    created = run(
        core.api.create_assistant(
            TERMINAL,
            name,
            instructions,
            description=description,
            k=k,
            selector=selector.value,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            history=history,
            layout=layout.value,
            visibility=visibility.value,
            starters=starter or [],
        )
    )
    typer.echo(
        f"Created {created.name} (model {created.model}, k={created.k}, {created.selector})."
    )


@assistant_app.command("edit")
def assistant_edit(
    name: NameArg,
    instructions: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    k: Annotated[int | None, typer.Option()] = None,
    selector: Annotated[Selector | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    history: Annotated[str | None, typer.Option(help=HISTORY_HELP)] = None,
    layout: Annotated[Layout | None, typer.Option(help=LAYOUT_HELP)] = None,
    visibility: Annotated[Visibility | None, typer.Option()] = None,
    starter: Annotated[list[str] | None, typer.Option(help="Replaces all starters.")] = None,
    rename: Annotated[str | None, typer.Option(help="A new name.")] = None,
) -> None:
    """Change an assistant's settings; every change is kept as a version."""
    changes: dict[str, Any] = {
        "instructions": instructions,
        "description": description,
        "k": k,
        "selector": selector.value if selector else None,
        "model": model,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "history": history,  # text: a number or "all", read by the core
        "layout": layout.value if layout else None,
        "visibility": visibility.value if visibility else None,
        "starters": starter,
        "name": rename,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if not changes:
        fail("Nothing to change: pass at least one option, e.g. --k 6.")
    core = open_core()
    edited = run(core.api.edit_assistant(TERMINAL, name, **changes))
    typer.echo(f"Updated {edited.name} (version {edited.version}).")


@assistant_app.command("show")
def assistant_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show an assistant's settings and instructions."""
    core = open_core()
    assistant = run(core.api.assistant(TERMINAL, name))
    count = run(core.api.count_examples(TERMINAL, name))
    data = {**assistant.to_dict(), "examples": count}
    if as_json:
        emit_json(data)
        return
    shown = {**data, "history": "all" if assistant.history is None else assistant.history}
    typer.secho(assistant.name, bold=True)
    if assistant.description:
        typer.echo(assistant.description)
    for key in (
        "model",
        "fine_tuned_model",
        "k",
        "selector",
        "temperature",
        "max_tokens",
        "history",
        "layout",
        "visibility",
        "version",
        "examples",
    ):
        if shown.get(key) is not None:
            typer.echo(f"  {key}: {shown[key]}")
    for text in assistant.starters:
        typer.echo(f"  starter: {text}")
    typer.echo("instructions:")
    typer.echo(assistant.instructions)


@assistant_app.command("list")
def assistant_list(as_json: JsonOpt = False) -> None:
    """List your assistants."""
    core = open_core()
    found = run(core.api.assistants(TERMINAL))
    if as_json:
        emit_json([a.to_dict() for a in found])
        return
    if not found:
        typer.echo("No assistants yet: `fewtune assistant create NAME --instructions TEXT`.")
    for a in found:
        typer.echo(f"{a.name:24} {a.active_model:36} {a.description}")


@assistant_app.command("delete")
def assistant_delete(
    name: NameArg,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: delete it with its examples and conversations.")
    ] = False,
) -> None:
    """Delete an assistant with its examples and conversations."""
    if not yes:
        fail(f"Deleting {name!r} removes its examples and conversations: pass --yes to confirm.")
    core = open_core()
    gone = run(core.api.delete_assistant(TERMINAL, name))
    typer.echo(f"Deleted {gone.name}.")


@assistant_app.command("history")
def assistant_history(name: NameArg, as_json: JsonOpt = False) -> None:
    """List an assistant's versions."""
    core = open_core()
    versions = run(core.api.assistant_history(TERMINAL, name))
    if as_json:
        emit_json(versions)
        return
    for v in versions:
        typer.echo(f"v{v['version']:<4} {v['changed_at']}  {v['change']:12} by {v['changed_by']}")


@assistant_app.command("restore")
def assistant_restore(name: NameArg, version: int) -> None:
    """Make an earlier version current again."""
    core = open_core()
    restored = run(core.api.restore_assistant(TERMINAL, name, version))
    typer.echo(f"Restored {restored.name} to version {version} (now version {restored.version}).")


@assistant_app.command("export")
def assistant_export(
    name: NameArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file instead of stdout.")
    ] = None,
) -> None:
    """Export an assistant (definition, examples and knowledge) as one JSON file."""
    core = open_core()
    data = run(core.api.export_assistant(TERMINAL, name))
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if not write_output(text, output):
        return


@assistant_app.command("import")
def assistant_import(
    file: Annotated[Path, typer.Argument(help="A file from `assistant export`.")],
    name: Annotated[str | None, typer.Option(help="Another name for it.")] = None,
) -> None:
    """Create an assistant from an exported file (all or nothing)."""
    data = read_input(file)
    core = open_core()
    assistant, result = run(core.api.import_assistant(TERMINAL, data, name))
    typer.echo(f"Imported {assistant.name} with {result.added} examples.")
    files = run(core.api.knowledge_files(TERMINAL, assistant.name))
    if files:
        chunks = counted(sum(f.chunks for f in files), "chunk")
        typer.echo(f"Its knowledge: {counted(len(files), 'file')}, {chunks}.")


# -- examples --------------------------------------------------------------------------------


def example_dict(example, score: float | None = None) -> dict[str, Any]:
    data = example.to_dict()
    if score is not None:
        data["score"] = round(score, 4)
    return data


@example_app.command("add")
def example_add(
    name: NameArg,
    input: Annotated[str, typer.Option("--input", help="A message the assistant may get.")],
    output: Annotated[str, typer.Option("--output", help="A good answer to it.")],
) -> None:
    """Add one example."""
    core = open_core()
    example = run(core.api.add_example(TERMINAL, name, input, output))
    typer.echo(f"Added example {example.id} to {name}.")


@example_app.command("import")
def example_import(
    name: NameArg, file: Annotated[Path, typer.Argument(help="JSONL or CSV file.")]
) -> None:
    """Import examples from JSONL ({"input","output"} or {"messages"} lines) or CSV (input,output)."""
    data = read_input(file)
    core = open_core()
    result = run(core.api.import_examples(TERMINAL, name, file.name, data))
    typer.echo(
        f"Imported {result.added} examples into {name} ({result.duplicates} duplicates skipped)."
    )


@example_app.command("export")
def example_export(
    name: NameArg,
    format: Annotated[Format, typer.Option("--format", help="jsonl or csv.")] = Format.jsonl,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file instead of stdout.")
    ] = None,
) -> None:
    """Export examples in the import formats."""
    core = open_core()
    text = run(core.api.export_examples(TERMINAL, name, format.value))
    if not write_output(text, output):
        return
    # Counted in the store: a CSV field may span lines, so lines are not examples.
    count = run(core.api.count_examples(TERMINAL, name))
    typer.echo(f"Wrote {count} examples to {output}.", err=True)


@example_app.command("list")
def example_list(
    name: NameArg,
    as_json: JsonOpt = False,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """List examples, oldest first."""
    core = open_core()
    found = run(core.api.examples(TERMINAL, name, offset, limit))
    if as_json:
        emit_json([example_dict(e) for e in found])
        return
    for e in found:
        typer.echo(f"{e.id:>6}  {e.input[:60]!r} -> {e.output[:60]!r}")


@example_app.command("remove")
def example_remove(
    name: NameArg, example_id: Annotated[int, typer.Argument(help="Its id.")]
) -> None:
    """Remove one example."""
    core = open_core()
    run(core.api.remove_example(TERMINAL, name, example_id))
    typer.echo(f"Removed example {example_id} from {name}.")


@example_app.command("search")
def example_search(
    name: NameArg,
    query: Annotated[str, typer.Argument(help="A message to find examples like.")],
    k: Annotated[int, typer.Option("-k", help="How many.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """The examples most like a message, best first, with cosine scores."""
    core = open_core()
    found = run(core.api.search_examples(TERMINAL, name, query, k))
    if as_json:
        emit_json([example_dict(e, s) for e, s in found])
        return
    for e, s in found:
        typer.echo(f"{s:6.3f}  #{e.id}  {e.input[:60]!r} -> {e.output[:60]!r}")


# -- knowledge -------------------------------------------------------------------------------


def knowledge_file_dict(file) -> dict[str, Any]:
    data = file.to_dict()
    del data["assistant_id"]
    return data


def found_dict(rank: int, found) -> dict[str, Any]:
    return {
        "rank": rank,
        "file": found.file.name,
        "file_id": found.file.id,
        "chunk": found.chunk.id,
        "position": found.chunk.position,
        "location": found.chunk.location,
        "score": round(found.score, 4),
        "text": found.chunk.text,
    }


@knowledge_app.command("add")
def knowledge_add(
    name: NameArg,
    files: Annotated[
        list[Path], typer.Argument(help=".txt, .md, .pdf, .html, .csv or .json files.")
    ],
) -> None:
    """Add files to an assistant's knowledge: all of them, or none if one is refused."""
    contents = [(file.name, read_input(file)) for file in files]
    core = open_core()
    added = run(core.api.add_knowledge(TERMINAL, name, contents))
    for f in added:
        typer.echo(f"Added {f.name} to {name} as file {f.id} ({counted(f.chunks, 'chunk')}).")


@knowledge_app.command("list")
def knowledge_list(name: NameArg, as_json: JsonOpt = False) -> None:
    """List an assistant's knowledge files, oldest first."""
    core = open_core()
    found = run(core.api.knowledge_files(TERMINAL, name))
    if as_json:
        emit_json([knowledge_file_dict(f) for f in found])
        return
    if not found:
        typer.echo(f"{name} has no knowledge files; add some with `fewtune knowledge add`.")
    for f in found:
        typer.echo(
            f"{f.id:>4}  {f.name}  {f.kind}  {file_size(f.size)}  {counted(f.chunks, 'chunk')}  {f.added_at}"
        )


@knowledge_app.command("remove")
def knowledge_remove(
    name: NameArg,
    file_id: Annotated[int, typer.Argument(help="Its id (from `knowledge list`).")],
) -> None:
    """Remove one knowledge file and its chunks."""
    core = open_core()
    gone = run(core.api.remove_knowledge(TERMINAL, name, file_id))
    typer.echo(f"Removed {gone.name} (file {gone.id}) from {name}.")


@knowledge_app.command("search")
def knowledge_search(
    name: NameArg,
    query: Annotated[str, typer.Argument(help="A message to find knowledge for.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """The chunks most like a message, best first: file, chunk, cosine score and text."""
    core = open_core()
    found = run(core.api.search_knowledge(TERMINAL, name, query, k))
    if as_json:
        emit_json([found_dict(rank, f) for rank, f in enumerate(found, start=1)])
        return
    for rank, f in enumerate(found, start=1):
        where = f", {f.chunk.location}" if f.chunk.location else ""
        text = " ".join(f.chunk.text.split())
        typer.echo(f"{rank}. {f.score:.3f}  {f.file.name}{where} (chunk {f.chunk.id})")
        typer.echo(f"   {text[:160]}{'…' if len(text) > 160 else ''}")


# -- chatting --------------------------------------------------------------------------------


def source_dict(source: Source) -> dict[str, Any]:
    return {
        "number": source.number,
        "file": source.file,
        "location": source.location,
        "file_id": source.file_id,
        "chunk_id": source.chunk_id,
        "score": source.score,
    }


def reply_dict(reply) -> dict[str, Any]:
    return {
        "reply": reply.text,
        "model": reply.model,
        "examples": [example_dict(e, s) for e, s in zip(reply.examples, reply.scores, strict=True)],
        "conversation_id": reply.conversation_id,
        "message_id": reply.message_id,
        "trimmed": reply.trimmed,
        "sources": [source_dict(source) for source in reply.sources],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        },
        "latency_ms": round(reply.latency_ms, 1),
    }


async def _ask(core: Core, name: str, message: str):
    try:
        reply = await core.chat.answer(TERMINAL, Origin(assistant=name), message)
    finally:
        await core.providers.close()
    assert reply is not None  # a named assistant always answers
    if reply.error is not None:
        raise ProviderError(reply.error)
    return reply


@app.command("ask")
def ask(
    name: NameArg,
    message: Annotated[str, typer.Argument(help="Your message.")],
    as_json: JsonOpt = False,
) -> None:
    """Ask an assistant one message and print its reply."""
    core = open_core()
    reply = run(_ask(core, name, message))
    if as_json:
        emit_json(reply_dict(reply))
    else:
        typer.echo(reply.text)
        if reply.sources:
            typer.secho(sources_line(reply.sources), dim=True)


async def _chat_loop(core: Core, name: str) -> None:
    assistant = core.assistants.get(TERMINAL, name)
    conversation_id: int | None = None  # the first message starts one
    typer.secho(
        f"Chatting with {assistant.name} ({assistant.active_model}). /new starts over, /exit or Ctrl-D ends.",
        dim=True,
    )
    for text in assistant.starters:
        typer.secho(f"  try: {text}", dim=True)
    note = core.providers.starting_note(assistant.active_model)
    help_line = "/new starts over, /exit or Ctrl-D ends."
    for line in typed_messages(help_line, passed=("/new",), first_note=note):
        if line == "/new":
            conversation_id = None
            typer.secho("(new conversation)", dim=True)
            continue
        shown = 0

        async def on_delta(text: str) -> None:
            nonlocal shown
            if shown == 0:
                sys.stdout.write(f"{assistant.name}> ")
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)

        origin = (
            Origin(assistant=name)
            if conversation_id is None
            else Origin(conversation_id=conversation_id)
        )
        try:
            reply = await core.chat.answer(TERMINAL, origin, line, on_delta=on_delta)
        except FewtuneError as exc:
            typer.secho(f"\nError: {exc}", err=True, fg=typer.colors.RED)
            continue
        assert reply is not None  # a named assistant or conversation always answers
        conversation_id = reply.conversation_id
        if reply.error is not None:
            typer.secho(f"\nError: {reply.error}", err=True, fg=typer.colors.RED)
            continue
        if shown == 0:
            sys.stdout.write(f"{assistant.name}> {reply.text}")
        sys.stdout.write("\n")
        used = ", ".join(f"#{e.id} {e.input[:30]!r}" for e in reply.examples) or "none"
        trimmed = f" [trimmed: {reply.trimmed}]" if reply.trimmed else ""
        typer.secho(f"  [examples: {used}]{trimmed}", dim=True)
        if reply.sources:
            typer.secho(f"  {sources_line(reply.sources)}", dim=True)


@app.command("chat")
def chat(name: NameArg) -> None:
    """Chat with an assistant in the terminal, streamed, showing the examples it used."""
    core = open_core()

    async def main() -> None:
        try:
            await _chat_loop(core, name)
        finally:
            await core.providers.close()

    run(main())


@app.command("demo")
def demo(
    no_chat: Annotated[
        bool, typer.Option("--no-chat", help="Only set up the demo assistant.")
    ] = False,
) -> None:
    """Create the demo assistant (number words in many languages to digits) and its promoted
    twin, then chat with both side by side."""
    core = open_core()
    assistant = run(core.api.install_demo(TERMINAL))
    count = run(core.api.count_examples(TERMINAL, assistant.name))
    typer.echo(f"Demo assistant {assistant.name!r} is ready ({count} examples).")
    twin = core.assistants.get(TERMINAL, TWIN_NAME)
    how = f"its LoRA adapter {twin.fine_tuned_model}" if twin.fine_tuned_model else "few-shot"
    typer.echo(f"Its promoted twin {twin.name!r} answers with {how} and the same examples.")
    if no_chat:
        return

    async def main() -> None:
        try:
            await side_by_side(core, [assistant.name, twin.name])
        finally:
            await core.providers.close()

    run(main())


# -- serving and maintenance -------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from settings; 0 picks one).")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many idle seconds (0: never).")
    ] = None,
) -> None:
    """Run the OpenAI-compatible model server (bearer token: FEWTUNE_SERVER_TOKEN)."""
    from training.serving.run import serve as run_server

    settings = open_settings()
    run_server(settings, host=host, port=port, idle_timeout=idle_timeout or 0)


@app.command("bot")
def discord_bot() -> None:
    """Run the Discord bot (DISCORD_TOKEN; see docs/discord.md)."""
    from bot.discord import MissingToken, run_bot

    settings = open_settings()
    try:
        run_bot(settings)
    except (MissingToken, ValueError) as exc:
        fail(str(exc))


@app.command("reindex")
def reindex() -> None:
    """Rebuild the example and knowledge indexes from SQLite."""
    core = open_core()
    total = run(core.api.reindex())
    typer.echo(f"Reindexed {total} examples.")
    count = run(core.api.reindex_knowledge())
    typer.echo(f"Reindexed {count} knowledge {'chunk' if count == 1 else 'chunks'}.")


# -- promotion -------------------------------------------------------------------------------

dataset_app = typer.Typer(help="The training data a promotion would use.", no_args_is_help=True)
adapter_app = typer.Typer(help="Fine-tuned adapters.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(adapter_app, name="adapter")


# Per promotion (and its dataset), over `[promotion] train_with_examples` in fewtune.toml.
WithExamplesOpt = Annotated[
    bool | None,
    typer.Option(
        "--train-with-examples/--train-alone",
        help="Training chats carry the examples retrieved for them, as served (default: "
        "[promotion] train_with_examples, true), or not.",
        show_default=False,
    ),
]


@dataset_app.command("export")
def dataset_export(
    name: NameArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="A file instead of stdout.")
    ] = None,
    split: Annotated[str, typer.Option(help="train or held_out.")] = "train",
    with_examples: WithExamplesOpt = None,
) -> None:
    """Export the training chats as OpenAI chat JSONL."""
    if split not in ("train", "held_out"):
        fail("--split must be train or held_out.")
    core = open_core()
    _, data = run(core.api.dataset(TERMINAL, name, with_examples))
    text = data.jsonl(split)
    if not write_output(text, output):
        return
    typer.echo(f"Wrote {text.count(chr(10))} chats to {output}.", err=True)


@dataset_app.command("stats")
def dataset_stats(
    name: NameArg, as_json: JsonOpt = False, with_examples: WithExamplesOpt = None
) -> None:
    """Conversations, examples, tokens, how many chats carry examples, what each filter removed."""
    core = open_core()
    _, data = run(core.api.dataset(TERMINAL, name, with_examples))
    if as_json:
        emit_json(data.stats)
        return
    for key, value in data.stats.items():
        if key != "filters":
            typer.echo(f"{key:20} {value}")
    for key, value in data.stats["filters"].items():
        typer.echo(f"  filter {key:24} {value}")
    if data.stats["held_out_chats"] < data.stats["held_out_floor"]:
        typer.echo(
            f"Fewer held-out chats than the floor of {data.stats['held_out_floor']}: the "
            "evaluation cannot decide, so a promotion switches only with --force."
        )


def show_promotion(promotion) -> None:
    typer.echo(f"{promotion.job} on {promotion.provider}: {promotion.status}")
    if promotion.fine_tuned_model:
        typer.echo(f"fine-tuned model: {promotion.fine_tuned_model}")
    if promotion.error:
        typer.echo(f"error: {promotion.error}")
    if promotion.evaluation:
        for line in report_lines(promotion.evaluation):
            typer.echo(
                line if line.startswith(("Evaluation", "primary", "decision")) else f"  {line}"
            )
    typer.echo(f"switched: {'yes' if promotion.switched else 'no'}")


async def show_step(step: Step) -> None:
    """One step of a promotion on its own line: the job's events, then the evaluation's."""
    if step.kind == "started":
        stats = step.promotion.dataset_stats or {}
        typer.echo(
            f"Uploaded {stats.get('train_chats')} training and {stats.get('held_out_chats')} held-out chats; "
            f"job {step.promotion.job_id} is {step.promotion.status}."
        )
    elif step.metrics:
        loss = step.metrics.get("train_loss")
        typer.echo(
            f"  step {step.metrics.get('step')}: train loss {loss:.4f}"
            if loss is not None
            else f"  {step.metrics}"
        )
    elif step.kind == "evaluating":
        typer.echo("Evaluating on the held-out split...")
    elif step.kind != "switched":
        typer.echo(f"  {step.message}")


async def _promote(
    core: Core,
    name: str,
    provider,
    base_model,
    wait: bool,
    force: bool,
    epochs,
    with_examples,
    judge: str | None,
):
    hyper = {"n_epochs": epochs} if epochs is not None else None
    try:
        if not wait:
            promotion = await core.promotions.start(
                TERMINAL,
                name,
                provider=provider,
                base_model=base_model,
                hyperparameters=hyper,
                force=force,
                with_examples=with_examples,
            )
            await show_step(Step("started", promotion))
            typer.echo(f"Follow it with `fewtune promote status {name}`.")
            return
        promotion = await core.promotions.promote(
            TERMINAL,
            name,
            {"frontend": "cli"},
            show_step,
            provider=provider,
            base_model=base_model,
            hyperparameters=hyper,
            force=force,
            with_examples=with_examples,
            judge=judge,
        )
    finally:
        await core.providers.close()
    if promotion.status == "cancelled":
        fail(f"The promotion of {name} was cancelled.")
    if promotion.status != "succeeded":
        fail(
            f"The fine-tuning job ended {promotion.status}: {promotion.error or 'no reason given'}."
        )
    show_promotion(promotion)


async def _cancel(core: Core, name: str):
    try:
        return await core.promotions.cancel(TERMINAL, name)
    finally:
        await core.providers.close()


@app.command("promote")
def promote(
    name: NameArg,
    target: Annotated[
        str | None,
        typer.Argument(help="With `status` or `cancel`: the assistant.", show_default=False),
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="Where to fine-tune (default: the assistant's provider).")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="The base model to fine-tune.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job, evaluate and switch.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote with little data; switch even if not better.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: auto).")] = None,
    with_examples: WithExamplesOpt = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help='A judge model for the evaluation, "provider:model" (default: [evaluation] '
            "judge; with --wait).",
        ),
    ] = None,
) -> None:
    """Fine-tune an assistant's own model (`fewtune promote status NAME` shows the latest,
    `fewtune promote cancel NAME` cancels the running one)."""
    core = open_core()
    if name == "status" and target:

        async def status():
            try:
                return await core.promotions.refresh(TERMINAL, target)
            finally:
                await core.providers.close()

        show_promotion(run(status()))
        return
    if name == "cancel" and target:
        promotion = run(_cancel(core, target))
        typer.echo(f"The promotion of {target} ({promotion.job}) is {promotion.status}.")
        return
    if target:
        fail(
            f"Unexpected argument {target!r}: `fewtune promote NAME`, `fewtune promote status NAME` "
            "or `fewtune promote cancel NAME`."
        )
    if judge is not None and not wait:
        fail("--judge is for the evaluation, which runs with --wait: add --wait.")
    run(_promote(core, name, provider, base_model, wait, force, epochs, with_examples, judge))


@app.command("rollback")
def rollback(name: NameArg) -> None:
    """Return an assistant to the model it used before its last promotion."""
    core = open_core()
    assistant = run(core.api.rollback(TERMINAL, name))
    typer.echo(f"{assistant.name} now answers with {assistant.active_model}.")


@adapter_app.command("download")
def adapter_download(
    name: NameArg, folder: Annotated[Path, typer.Argument(help="Where to put it.")]
) -> None:
    """Download the assistant's fine-tuned LoRA adapter (PEFT format)."""
    core = open_core()

    async def fetch():
        try:
            return await core.promotions.download_adapter(TERMINAL, name, folder)
        finally:
            await core.providers.close()

    where = run(fetch())
    typer.echo(f"Adapter saved in {where} (PEFT format: load with peft, transformers or vLLM).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
