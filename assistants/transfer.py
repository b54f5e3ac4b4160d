"""An assistant as one JSON file: its definition, its examples and its knowledge files (as
stored: records and chunks) (`/assistant export|import`).

Used by `/assistant export|import` in Discord and `fewtune assistant export|import`. Import is
all or nothing: if the examples or the knowledge are refused, the assistant just created is
deleted again. A file exported before knowledge existed has no `knowledge` and imports as before.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from assistants.actor import Actor
from assistants.assistant import EDITABLE, Assistant
from assistants.errors import FewtuneError, ImportRejected
from assistants.example_files import load_json
from assistants.examples import ImportResult
from assistants.knowledge import bundle as knowledge_bundle

if TYPE_CHECKING:  # the core holds the api, which calls these
    from assistants.core import Core

FORMAT = "fewtune-assistant"
VERSION = 1
DEFINITION = EDITABLE  # every setting a user can change, the name included


def export_assistant(core: Core, actor: Actor, name: str) -> dict[str, Any]:
    """The definition, examples and knowledge of an assistant the actor may manage (else
    PermissionDenied)."""
    assistant = core.assistants.get_managed(actor, name, "export")
    lines = core.examples.export(actor, assistant.name, "jsonl").split("\n")
    files = core.knowledge.list(actor, assistant.name)
    return {
        "format": FORMAT,
        "version": VERSION,
        "assistant": {k: getattr(assistant, k) for k in DEFINITION},
        "examples": [json.loads(line) for line in lines if line.strip()],
        "knowledge": knowledge_bundle.dump(core.knowledge, files),
    }


def import_assistant(
    core: Core, actor: Actor, data: bytes, *, name: str | None = None
) -> tuple[Assistant, ImportResult]:
    """Create an assistant (in the actor's scope, owned by the actor) from an exported file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportRejected(
            f"The file is not UTF-8 JSON exported by `/assistant export` (byte {exc.start})."
        ) from exc
    bundle = load_json(text, "The file")
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ImportRejected("The file is not an assistant exported by `/assistant export`.")
    if bundle.get("version") != VERSION:
        raise ImportRejected(f"The file has format version {bundle.get('version')!r}; expected 1.")
    definition = bundle.get("assistant")
    examples = bundle.get("examples", [])
    if not isinstance(definition, dict) or not isinstance(examples, list):
        raise ImportRejected("The file needs an 'assistant' object and an 'examples' list.")
    # Checked before the assistant is made: a bad file creates nothing.
    knowledge = knowledge_bundle.load(bundle.get("knowledge", []), core.embedder.count_tokens)
    values = {k: definition[k] for k in DEFINITION if k in definition and k != "name"}
    if "instructions" not in values:
        raise ImportRejected("The assistant in the file has no instructions.")
    # A file exported before the setting existed: its assistant laid its examples out as turns.
    values.setdefault("layout", "turns")
    assistant = core.assistants.create(
        actor, name or str(definition.get("name", "")), values.pop("instructions"), **values
    )
    result = ImportResult(added=0, duplicates=0)
    try:
        if examples:
            # ASCII escapes keep a lone surrogate encodable, for the reader to refuse by its line.
            jsonl = "\n".join(json.dumps(e) for e in examples).encode()
            result = core.examples.import_data(actor, assistant.name, "examples.jsonl", jsonl)
        if knowledge:
            core.knowledge.add_prepared(actor, assistant.name, knowledge)
    except FewtuneError:
        core.assistants.delete(actor, assistant.name)
        raise
    return assistant, result
