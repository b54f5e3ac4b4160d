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
from assistants.privacy import Privacy
from assistants.promotion import Promotions
from assistants.providers import LOCAL, ModelRef, Providers
from storage.db import open_db
from storage.embeddings import Embedder
from storage.index import ExampleIndex, IndexUnavailable
from storage.settings import Settings, load_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairReport:
    """What an index check found and fixed: assistants checked, vectors added and removed."""

    checked: int
    added: int
    removed: int


class Core:
    """Everything below the frontends. Open one per process with `Core.open()`."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.db = open_db(settings.db_path)
        self.lock = threading.RLock()  # one writer at a time: SQLite allows one write transaction
        self.embedder = embedder or Embedder()
        self._index: ExampleIndex | None = None
        self._index_lock = threading.Lock()
        self.providers = Providers(settings)
        self.assistants = Assistants(self.db, settings, self.lock, on_delete=self._drop_index)
        self.examples = Examples(self.db, self.assistants, self.index, self.lock)
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
                self.repair(index)
                self._index = index
            return self._index

    def _drop_index(self, assistant_id: int) -> None:
        try:
            self.index().drop(assistant_id)
        except IndexUnavailable as exc:
            # The assistant is already gone from SQLite (the truth); failing here would tell the
            # user a finished delete failed. The next start-up repair drops the stray collection.
            log.warning("could not drop the index of deleted assistant %s: %s", assistant_id, exc)

    def repair(self, index: ExampleIndex | None = None) -> RepairReport:
        """Make the index agree with SQLite. Assistants marked dirty (a write was interrupted) or
        whose vector count differs are compared id by id; missing vectors are added, stray ones
        removed, and collections of deleted assistants dropped."""
        index = index or self.index()
        checked = added = removed = 0
        rows = self.db.execute(
            "SELECT a.id, a.index_dirty, count(e.id) FROM assistants a "
            "LEFT JOIN examples e ON e.assistant_id = a.id GROUP BY a.id"
        ).fetchall()
        for assistant_id, dirty, count in rows:
            if not dirty and index.count(assistant_id) == count:
                continue
            checked += 1
            a, r = self._sync(index, assistant_id)
            added += a
            removed += r
        known = {f"assistant-{row[0]}" for row in rows}
        for collection in index.client.list_collections():
            name = getattr(collection, "name", collection)
            if str(name).startswith("assistant-") and name not in known:
                index.client.delete_collection(name)
        if checked:
            log.warning(
                "example index repaired: %d assistants, %d added, %d removed",
                checked,
                added,
                removed,
            )
        return RepairReport(checked, added, removed)

    def _sync(self, index: ExampleIndex, assistant_id: int) -> tuple[int, int]:
        with self.lock:
            truth = dict(
                self.db.execute(
                    "SELECT id, input FROM examples WHERE assistant_id = ?", [assistant_id]
                ).fetchall()
            )
            present = index.ids(assistant_id)
            missing = [i for i in truth if i not in present]
            stray = [i for i in present if i not in truth]
            index.delete(assistant_id, stray)
            index.add(assistant_id, missing, [truth[i] for i in missing])
            with self.db.conn:
                self.db.execute(
                    "UPDATE assistants SET index_dirty = 0 WHERE id = ?", [assistant_id]
                )
        return len(missing), len(stray)

    def reindex(self) -> int:
        """Rebuild the whole index from SQLite (re-embedding every example); returns the count."""
        index = self.index()
        total = 0
        for (assistant_id,) in self.db.execute("SELECT id FROM assistants").fetchall():
            index.drop(assistant_id)
            with self.lock:
                rows = self.db.execute(
                    "SELECT id, input FROM examples WHERE assistant_id = ? ORDER BY id",
                    [assistant_id],
                ).fetchall()
                index.add(assistant_id, [r[0] for r in rows], [r[1] for r in rows])
                with self.db.conn:
                    self.db.execute(
                        "UPDATE assistants SET index_dirty = 0 WHERE id = ?", [assistant_id]
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
