"""The core: one object that frontends hold, tying settings, SQLite, the index and the models."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from assistants.api import Api
from assistants.assistant import Assistants
from assistants.chat import Chat
from assistants.examples import Examples
from assistants.feedback import FeedbackBook
from assistants.knowledge import Knowledge
from assistants.knowledge.held import HeldKnowledge
from assistants.privacy import Privacy
from assistants.promotion import Promotions
from assistants.providers import LOCAL, ModelRef, Providers
from storage.db import open_db
from storage.embeddings import Embedder
from storage.held import HeldExamples
from storage.index import EXAMPLES, KNOWLEDGE, ExampleIndex, IndexUnavailable
from storage.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairReport:
    """What an index check found and fixed: assistants checked, vectors added and removed."""

    checked: int
    added: int
    removed: int

    def __add__(self, other: RepairReport) -> RepairReport:
        return RepairReport(
            self.checked + other.checked, self.added + other.added, self.removed + other.removed
        )


@dataclass(frozen=True)
class Indexed:
    """What one index holds, as SQLite has it: the table of its rows, the text embedded, and the
    column of `assistants` that counts an assistant's writes whose index step is in flight."""

    prefix: str  # of its collections' names (storage/index.py)
    table: str
    text: str
    dirty: str


EXAMPLE_ROWS = Indexed(EXAMPLES, "examples", "input", "index_dirty")
KNOWLEDGE_ROWS = Indexed(KNOWLEDGE, "knowledge_chunks", "text", "knowledge_dirty")


class Core:
    """Everything below the frontends. Open one per process with `Core.open()`."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.db = open_db(settings.db_path)
        self.lock = threading.RLock()  # one writer at a time: SQLite allows one write transaction
        self.embedder = embedder or Embedder()
        self._index: ExampleIndex | None = None
        self._knowledge_index: ExampleIndex | None = None
        self._index_lock = threading.Lock()
        self.providers = Providers(settings)
        self.assistants = Assistants(self.db, settings, self.lock, on_delete=self._drop_index)
        self.examples = Examples(self.db, self.assistants, self.index, self.lock)
        # Each assistant's knowledge in memory, for exact search (assistants/knowledge/held.py).
        self.held_knowledge = HeldKnowledge(
            self.db, self.knowledge_index, settings.knowledge.memory_mb
        )
        self.knowledge = Knowledge(
            self.db, self.assistants, settings.knowledge, self.held_knowledge, self.lock
        )
        # Blocking work of async calls runs here. More threads than the default pool (cores + 4):
        # messages arriving together then wait together and are embedded in one batch.
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fewtune-core")
        self.chat = Chat(
            self.db,
            settings,
            self.assistants,
            self.examples,
            self.index,
            self.providers,
            self.lock,
            self.executor,
            knowledge=self.held_knowledge,
            held_examples=HeldExamples(self.db, self.index, settings.index),
        )
        self.feedback = FeedbackBook(self.db, self.assistants, self.examples, self.lock)
        self.privacy = Privacy(self.db, self.lock)
        self.promotions = Promotions(
            self.db, self.assistants, self.chat, self.providers, self.lock, self.executor
        )
        self.api = Api(self)  # what frontends await (assistants/api.py)

    @classmethod
    def open(cls, home: str | Path | None = None, embedder: Embedder | None = None) -> Core:
        return cls(load_settings(home), embedder)

    def index(self) -> ExampleIndex:
        """The example index, opened on first use and then checked against SQLite once."""
        with self._index_lock:
            if self._index is None:
                index = ExampleIndex(self.settings, self.embedder)
                self._repair(index, EXAMPLE_ROWS)
                self._index = index
            return self._index

    def knowledge_index(self) -> ExampleIndex:
        """The knowledge index (chunks' vectors), opened on first use and checked once."""
        with self._index_lock:
            if self._knowledge_index is None:
                index = ExampleIndex(self.settings, self.embedder, prefix=KNOWLEDGE)
                self._repair(index, KNOWLEDGE_ROWS)
                self._knowledge_index = index
            return self._knowledge_index

    def _drop_index(self, assistant_id: int) -> None:
        for opened in (self.index, self.knowledge_index):
            try:
                opened().drop(assistant_id)
            except IndexUnavailable as exc:
                # The assistant is already gone from SQLite (the truth); failing here would tell
                # the user a finished delete failed. The next start-up repair drops the stray.
                log.warning(
                    "could not drop an index of deleted assistant %s: %s", assistant_id, exc
                )

    def repair(self, index: ExampleIndex | None = None) -> RepairReport:
        """Make the indexes agree with SQLite: the example index (or the one given), and the
        knowledge index when none is given. See `_repair`."""
        if index is not None:
            return self._repair(
                index, KNOWLEDGE_ROWS if index.prefix == KNOWLEDGE else EXAMPLE_ROWS
            )
        return self._repair(self.index(), EXAMPLE_ROWS) + self._repair(
            self.knowledge_index(), KNOWLEDGE_ROWS
        )

    def _repair(self, index: ExampleIndex, rows_of: Indexed) -> RepairReport:
        """Assistants marked dirty (a write was interrupted) or whose vector count differs are
        compared id by id; missing vectors are added, stray ones removed, and collections of
        deleted assistants dropped. An assistant with no rows and no collection is skipped
        without creating one."""
        checked = added = removed = 0
        rows = self.db.execute(
            f"SELECT a.id, a.{rows_of.dirty}, count(r.id) FROM assistants a "
            f"LEFT JOIN {rows_of.table} r ON r.assistant_id = a.id GROUP BY a.id"
        ).fetchall()
        prefix = f"{rows_of.prefix}-"
        present = {
            str(getattr(c, "name", c))
            for c in index.client.list_collections()
            if str(getattr(c, "name", c)).startswith(prefix)
        }
        for assistant_id, dirty, count in rows:
            if not dirty and not count and f"{prefix}{assistant_id}" not in present:
                continue
            if not dirty and index.count(assistant_id) == count:
                continue
            checked += 1
            a, r = self._sync(index, rows_of, assistant_id)
            added += a
            removed += r
        known = {f"{prefix}{row[0]}" for row in rows}
        for name in present - known:
            index.client.delete_collection(name)
        if checked:
            log.warning(
                "%s index repaired: %d assistants, %d added, %d removed",
                "knowledge" if rows_of is KNOWLEDGE_ROWS else "example",
                checked,
                added,
                removed,
            )
        return RepairReport(checked, added, removed)

    def _sync(self, index: ExampleIndex, rows_of: Indexed, assistant_id: int) -> tuple[int, int]:
        with self.lock:
            truth = dict(
                self.db.execute(
                    f"SELECT id, {rows_of.text} FROM {rows_of.table} WHERE assistant_id = ?",
                    [assistant_id],
                ).fetchall()
            )
            present = index.ids(assistant_id)
            missing = [i for i in truth if i not in present]
            stray = [i for i in present if i not in truth]
            index.delete(assistant_id, stray)
            index.add(assistant_id, missing, [truth[i] for i in missing])
            with self.db.conn:
                self.db.execute(
                    f"UPDATE assistants SET {rows_of.dirty} = 0 WHERE id = ?", [assistant_id]
                )
        return len(missing), len(stray)

    def reindex(self) -> int:
        """Rebuild the example index from SQLite (re-embedding every example); returns the count."""
        return self._reindex(self.index(), EXAMPLE_ROWS)

    def reindex_knowledge(self) -> int:
        """Rebuild the knowledge index from SQLite (re-embedding every chunk); returns the count."""
        return self._reindex(self.knowledge_index(), KNOWLEDGE_ROWS)

    def _reindex(self, index: ExampleIndex, rows_of: Indexed) -> int:
        total = 0
        for (assistant_id,) in self.db.execute("SELECT id FROM assistants").fetchall():
            index.drop(assistant_id)
            with self.lock:
                rows = self.db.execute(
                    f"SELECT id, {rows_of.text} FROM {rows_of.table} "
                    "WHERE assistant_id = ? ORDER BY id",
                    [assistant_id],
                ).fetchall()
                index.add(assistant_id, [r[0] for r in rows], [r[1] for r in rows])
                with self.db.conn:
                    self.db.execute(
                        f"UPDATE assistants SET {rows_of.dirty} = 0 WHERE id = ?", [assistant_id]
                    )
            total += len(rows)
        return total

    def start_local_server(self) -> bool:
        """Find or start the local model server in the background (returns at once) when it
        will be needed: `[server] start_with_bot` is on and the default model or an assistant's
        model is a `local:` one. True when it began. For a frontend that stays up (the bot)."""
        if not self.settings.server.start_with_bot:
            return False
        uses_local = ModelRef.parse(self.settings.chat.default_model).provider == LOCAL
        if not uses_local:
            # The model that answers: the fine-tuned one once promoted, else the configured one.
            uses_local = (
                self.db.execute(
                    "SELECT 1 FROM assistants "
                    "WHERE coalesce(nullif(fine_tuned_model, ''), model) GLOB 'local:*' LIMIT 1"
                ).fetchone()
                is not None
            )
        if uses_local:
            self.providers.start_local()
        return uses_local

    def close(self) -> None:
        """Wait for work in flight on the core's threads, then close every connection."""
        self.executor.shutdown(wait=True)
        self.db.close()
