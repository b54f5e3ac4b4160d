"""Assistants: instructions plus settings, owned, scoped, versioned, and who may do what with them.

Rules (see docs/design.md):
- A name is 1-64 letters, digits, `-` or `_`, unique case-insensitively in its scope (a guild, or
  a user's own space in DMs and the terminal).
- Visibility: private (the owner), guild (members of its guild), public (everyone the bot serves).
- The owner, and members with Manage Server in the assistant's guild, may edit, delete, export
  and see the instructions; they can also see the guild's private assistants (to moderate them).
- Every change records a snapshot in assistant_versions, so any version can be restored.
"""

from __future__ import annotations

import builtins  # the `list` methods below shadow the built-in in annotations
import json
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from assistants.actor import Actor
from assistants.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from assistants.prompt import LAYOUTS
from assistants.text import check_text
from storage.settings import Settings

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_INSTRUCTIONS = 32_000
MAX_DESCRIPTION = 1_000
MAX_STARTERS = 4
MAX_STARTER_LENGTH = 200
MAX_K = 25
MAX_HISTORY = 1000  # earlier exchanges per prompt; far more than any context window holds
VISIBILITIES = ("private", "guild", "public")
SELECTORS = ("similarity", "mmr", "coverage", "random", "fixed")
# How the examples sit in the prompt (assistants/prompt.py). New assistants get the layout that
# measured best (docs/benchmarks.md); those made before the setting keep `turns`.
DEFAULT_LAYOUT = "turns"
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+:\S.*$")
# The model after "provider:" is a name, never a path: letters, digits, ".", "_", "-" and ":"
# (fine-tuned names hold colons), with at most one "/" as in Hugging Face's owner/model, and
# every part starting with a letter or digit, so no "..", "~", "/etc" or "C:\\".
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)?$")
MAX_MODEL_NAME = 128
EDITABLE = (
    "description",
    "instructions",
    "starters",
    "visibility",
    "model",
    "k",
    "selector",
    "temperature",
    "max_tokens",
    "history",
    "layout",
    "name",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Assistant:
    id: int
    name: str
    instructions: str
    owner_id: str
    guild_id: str | None
    scope: str
    description: str = ""
    starters: list[str] = field(default_factory=list)
    visibility: str = "private"
    model: str = ""
    fine_tuned_model: str | None = None
    k: int = 4
    selector: str = "similarity"
    temperature: float = 0.7
    max_tokens: int | None = None
    history: int | None = None  # earlier exchanges in each prompt; None: all the budget holds
    layout: str = DEFAULT_LAYOUT  # how the examples sit in the prompt: one of LAYOUTS
    version: int = 1
    created_at: str = ""
    updated_at: str = ""

    @property
    def active_model(self) -> str:
        """The model that answers: the fine-tuned one once promoted, else the configured one."""
        return self.fine_tuned_model or self.model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Assistant:
        fields = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        fields["starters"] = json.loads(row["starters"] or "[]")
        return cls(**fields)


def history_setting(value: Any) -> int | None:
    """The `history` setting from a number or from text a user typed: a whole number of earlier
    exchanges (0: every message stands alone), or None / "all" / blank for every one that fits."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "all"):
            return None
        value = int(text) if text.isdecimal() else text
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_HISTORY:
        raise InvalidInput(
            f"history (earlier exchanges in each prompt) must be a whole number from 0 to "
            f"{MAX_HISTORY}, or all."
        )
    return value


def validate(values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Check and normalise assistant fields; raise InvalidInput naming the first bad one."""
    out = dict(values)
    if "name" in out:
        name = str(out["name"]).strip()
        if not NAME_PATTERN.match(name):
            raise InvalidInput(
                f"The name {name[:70]!r} is not valid: use 1-64 letters, digits, '-' or '_'."
            )
        out["name"] = name
    if "instructions" in out:
        text = check_text(str(out["instructions"]).strip(), "The instructions")
        if not text:
            raise InvalidInput("The instructions are empty: say what the assistant should do.")
        if len(text) > MAX_INSTRUCTIONS:
            raise InvalidInput(
                f"The instructions are {len(text):,} characters; the limit is {MAX_INSTRUCTIONS:,}."
            )
        out["instructions"] = text
    if "description" in out:
        text = check_text(str(out["description"] or "").strip(), "The description")
        if len(text) > MAX_DESCRIPTION:
            raise InvalidInput(
                f"The description is {len(text):,} characters; the limit is {MAX_DESCRIPTION:,}."
            )
        out["description"] = text
    if "starters" in out:
        starters = [
            check_text(str(s).strip(), "A conversation starter")
            for s in (out["starters"] or [])
            if str(s).strip()
        ]
        if len(starters) > MAX_STARTERS:
            raise InvalidInput(f"An assistant has at most {MAX_STARTERS} conversation starters.")
        if any(len(s) > MAX_STARTER_LENGTH for s in starters):
            raise InvalidInput(
                f"A conversation starter is longer than {MAX_STARTER_LENGTH} characters."
            )
        out["starters"] = starters
    if "visibility" in out and out["visibility"] not in VISIBILITIES:
        raise InvalidInput(f"Visibility must be one of {', '.join(VISIBILITIES)}.")
    if "layout" in out and out["layout"] not in LAYOUTS:
        raise InvalidInput(
            f"The layout {str(out['layout'])[:40]!r} is not one: use {', '.join(LAYOUTS)}."
        )
    if "selector" in out and out["selector"] not in SELECTORS:
        raise InvalidInput(f"The selector must be one of {', '.join(SELECTORS)}.")
    if "k" in out:
        k = out["k"]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_K:
            raise InvalidInput(
                f"k (examples per message) must be a whole number from 0 to {MAX_K}."
            )
    if "temperature" in out:
        t = out["temperature"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2:
            raise InvalidInput("The temperature must be a number from 0 to 2.")
        out["temperature"] = float(t)
    if "max_tokens" in out and out["max_tokens"] is not None:
        m = out["max_tokens"]
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 32_768:
            raise InvalidInput("max tokens must be a whole number from 1 to 32768.")
    if "history" in out:
        out["history"] = history_setting(out["history"])
    if "model" in out:
        model = str(out["model"]).strip()
        if not MODEL_PATTERN.match(model):
            raise InvalidInput(
                f"The model {model[:80]!r} must look like provider:model, e.g. local:SmolLM2-135M-Instruct."
            )
        provider, model_name = model.split(":", 1)
        if provider != "local" and provider not in settings.providers:
            known = ", ".join(["local", *sorted(settings.providers)])
            raise InvalidInput(
                f"Unknown provider {provider!r}: use one of {known}, or add it to fewtune.toml."
            )
        if len(model_name) > MAX_MODEL_NAME or not MODEL_NAME_PATTERN.fullmatch(model_name):
            raise InvalidInput(
                f"The model name {model_name[:80]!r} is not a model's name: use letters, digits, "
                f"'.', '_', '-', ':' and at most one '/' (owner/model), up to {MAX_MODEL_NAME} "
                "characters, e.g. local:SmolLM2-135M-Instruct."
            )
        out["model"] = model
    return out


def is_visible(actor: Actor, assistant: Assistant) -> bool:
    if actor.user_id == assistant.owner_id or assistant.visibility == "public":
        return True
    same_guild = assistant.guild_id is not None and actor.guild_id == assistant.guild_id
    if assistant.visibility == "guild" and same_guild:
        return True
    return same_guild and actor.can_manage_guild


def can_manage(actor: Actor, assistant: Assistant) -> bool:
    """Edit, delete, export, see the instructions, promote: the owner or Manage Server there."""
    if actor.user_id == assistant.owner_id:
        return True
    return (
        assistant.guild_id is not None
        and actor.guild_id == assistant.guild_id
        and actor.can_manage_guild
    )


class Assistants:
    """Create, find, change and delete assistants, with permissions and version history."""

    def __init__(self, db: Database, settings: Settings, lock: threading.RLock, on_delete=None):
        self.db = db
        self.settings = settings
        self.lock = lock
        self._on_delete = on_delete  # drops the assistant's index collection

    # -- reading -------------------------------------------------------------------------------

    def _rows(self, where: str, params: list[Any]) -> list[Assistant]:
        rows = self.db.query(f"SELECT * FROM assistants WHERE {where} ORDER BY id", params)
        return [Assistant.from_row(r) for r in rows]

    def by_id(self, assistant_id: int) -> Assistant:
        found = self._rows("id = ?", [assistant_id])
        if not found:
            raise NotFound(f"Assistant #{assistant_id} no longer exists.")
        return found[0]

    def get(self, actor: Actor, name: str) -> Assistant:
        """The assistant called `name` that the actor sees: their scope's first, then their own,
        then their guild's, then public ones."""
        key = str(name).strip().lower()
        candidates = (
            [a for a in self._rows("name_key = ?", [key]) if is_visible(actor, a)]
            if NAME_PATTERN.match(key)  # no stored name is otherwise; nor can SQLite take any text
            else []
        )
        if not candidates:
            raise NotFound(
                f"No assistant called {str(name)[:70]!r} here; `assistant list` shows the ones you can use."
            )

        def rank(a: Assistant) -> int:
            if a.scope == actor.scope:
                return 0
            if a.owner_id == actor.user_id:
                return 1
            if a.guild_id is not None and a.guild_id == actor.guild_id:
                return 2
            return 3

        return min(candidates, key=lambda a: (rank(a), a.id))

    def get_managed(self, actor: Actor, name: str, action: str) -> Assistant:
        assistant = self.get(actor, name)
        if not can_manage(actor, assistant):
            raise PermissionDenied(
                f"Only the owner of {assistant.name!r} or a member with Manage Server may {action} it."
            )
        return assistant

    def list(self, actor: Actor) -> list[Assistant]:
        """Every assistant the actor may use, sorted by name."""
        if actor.guild_id:
            rows = self._rows(
                "owner_id = ? OR visibility = 'public' OR guild_id = ?",
                [actor.user_id, actor.guild_id],
            )
        else:
            rows = self._rows("owner_id = ? OR visibility = 'public'", [actor.user_id])
        return sorted((a for a in rows if is_visible(actor, a)), key=lambda a: a.name.lower())

    def complete(self, actor: Actor, prefix: str) -> builtins.list[str]:
        """Names for autocomplete: at most 25, those starting with the prefix first."""
        prefix = prefix.strip().lower()
        names = [a.name for a in self.list(actor)]
        starts = [n for n in names if n.lower().startswith(prefix)]
        contains = [n for n in names if prefix in n.lower() and n not in starts]
        return (starts + contains)[:25]

    # -- writing -------------------------------------------------------------------------------

    def create(
        self,
        actor: Actor,
        name: str,
        instructions: str,
        *,
        description: str = "",
        starters: builtins.list[str] | tuple[str, ...] = (),
        visibility: str | None = None,
        model: str | None = None,
        k: int = 4,
        selector: str = "similarity",
        temperature: float = 0.7,
        max_tokens: int | None = None,
        history: int | str | None = None,
        layout: str = DEFAULT_LAYOUT,
    ) -> Assistant:
        values = validate(
            {
                "name": name,
                "instructions": instructions,
                "description": description,
                "starters": list(starters),
                "visibility": visibility or ("guild" if actor.guild_id else "private"),
                "model": model or self.settings.chat.default_model,
                "k": k,
                "selector": selector,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "history": history,
                "layout": layout,
            },
            self.settings,
        )
        stamp = now()
        row = {
            **values,
            "starters": json.dumps(values["starters"], ensure_ascii=False),
            "name_key": values["name"].lower(),
            "scope": actor.scope,
            "owner_id": actor.user_id,
            "guild_id": actor.guild_id,
            "version": 1,
            "created_at": stamp,
            "updated_at": stamp,
        }
        with self.lock, self.db.conn:
            taken = self.db.execute(
                "SELECT 1 FROM assistants WHERE scope = ? AND name_key = ?",
                [row["scope"], row["name_key"]],
            ).fetchone()
            if taken:
                raise AlreadyExists(
                    f"An assistant called {values['name']!r} already exists here; pick another name."
                )
            assistant_id = self.db.table("assistants").insert(row).last_pk
            assistant = self.by_id(int(assistant_id))  # type: ignore[arg-type]
            self._record(assistant, actor, "create")
        return assistant

    def edit(self, actor: Actor, name: str, /, **changes: Any) -> Assistant:
        """Change settings; `name=` among the changes renames (hence positional-only `name`)."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise InvalidInput(f"{sorted(unknown)[0]!r} is not a setting of an assistant.")
        changes = validate(changes, self.settings)
        with self.lock, self.db.conn:
            assistant = self.get_managed(actor, name, "edit")
            return self._apply(actor, assistant, changes, "edit")

    def _apply(
        self, actor: Actor, assistant: Assistant, changes: dict[str, Any], change: str
    ) -> Assistant:
        current = assistant.to_dict()
        changes = {k: v for k, v in changes.items() if current.get(k) != v}
        if not changes:
            return assistant
        row = dict(changes)
        if "name" in row:
            key = row["name"].lower()
            clash = self.db.execute(
                "SELECT 1 FROM assistants WHERE scope = ? AND name_key = ? AND id != ?",
                [assistant.scope, key, assistant.id],
            ).fetchone()
            if clash:
                raise AlreadyExists(f"An assistant called {row['name']!r} already exists here.")
            row["name_key"] = key
        if "starters" in row:
            row["starters"] = json.dumps(row["starters"], ensure_ascii=False)
        row["version"] = assistant.version + 1
        row["updated_at"] = now()
        self.db.table("assistants").update(assistant.id, row)
        updated = self.by_id(assistant.id)
        self._record(updated, actor, change)
        return updated

    def set_fine_tuned_model(self, actor: Actor, name: str, model: str | None) -> Assistant:
        """Switch an assistant to its fine-tuned model (or back with None); recorded as a version."""
        with self.lock, self.db.conn:
            assistant = self.get_managed(actor, name, "promote")
            current = assistant.fine_tuned_model
            if current == model:
                return assistant
            self.db.table("assistants").update(
                assistant.id,
                {"fine_tuned_model": model, "version": assistant.version + 1, "updated_at": now()},
            )
            updated = self.by_id(assistant.id)
            self._record(updated, actor, "promote" if model else "rollback")
            return updated

    def delete(self, actor: Actor, name: str) -> Assistant:
        with self.lock, self.db.conn:
            assistant = self.get_managed(actor, name, "delete")
            # ON DELETE CASCADE removes its versions, examples, conversations, messages, bindings.
            self.db.execute("DELETE FROM assistants WHERE id = ?", [assistant.id])
        if self._on_delete:
            self._on_delete(assistant.id)
        return assistant

    # -- index marks ---------------------------------------------------------------------------

    # `index_dirty` (examples) and `knowledge_dirty` (knowledge chunks) count the writes whose
    # index step is in flight (several may be, outside the lock): one finishing must not clear
    # the mark of another. Not zero at start-up: the repair compares that index with SQLite.
    INDEX_MARKS = ("index_dirty", "knowledge_dirty")

    def mark_dirty(self, assistant_id: int, mark: str) -> None:
        self._check_mark(mark)
        self.db.execute(f"UPDATE assistants SET {mark} = {mark} + 1 WHERE id = ?", [assistant_id])

    def unmark_dirty(self, assistant_id: int, mark: str) -> None:
        self._check_mark(mark)
        self.db.execute(
            f"UPDATE assistants SET {mark} = max({mark} - 1, 0) WHERE id = ?", [assistant_id]
        )

    def _check_mark(self, mark: str) -> None:
        if mark not in self.INDEX_MARKS:  # a column name in SQL: only these two
            raise ValueError(f"no index mark {mark!r}")

    # -- history -------------------------------------------------------------------------------

    def _record(self, assistant: Assistant, actor: Actor, change: str) -> None:
        self.db.table("assistant_versions").insert(
            {
                "assistant_id": assistant.id,
                "version": assistant.version,
                "snapshot": json.dumps(assistant.to_dict(), ensure_ascii=False),
                "changed_by": actor.user_id,
                "change": change,
                "changed_at": assistant.updated_at,
            }
        )

    def history(self, actor: Actor, name: str) -> builtins.list[dict[str, Any]]:
        """Versions, oldest first: version, change, changed_by, changed_at and the snapshot."""
        assistant = self.get_managed(actor, name, "see the history of")
        rows = self.db.query(
            "SELECT * FROM assistant_versions WHERE assistant_id = ? ORDER BY version",
            [assistant.id],
        )
        return [{**r, "snapshot": json.loads(r["snapshot"])} for r in rows]

    def restore(self, actor: Actor, name: str, version: int) -> Assistant:
        """Make an earlier version current again (as a new version)."""
        with self.lock, self.db.conn:
            assistant = self.get_managed(actor, name, "restore")
            row = self.db.execute(
                "SELECT snapshot FROM assistant_versions WHERE assistant_id = ? AND version = ?",
                [assistant.id, version],
            ).fetchone()
            if row is None:
                raise NotFound(f"{assistant.name!r} has no version {version}.")
            snapshot = json.loads(row[0])
            changes = {k: snapshot[k] for k in EDITABLE if k in snapshot}
            # A version recorded before the setting existed put every earlier turn in.
            changes.setdefault("history", None)
            changes.setdefault("layout", "turns")  # and laid its examples out as turns
            return self._apply(actor, assistant, changes, f"restore {version}")
