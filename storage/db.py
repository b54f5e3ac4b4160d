"""The SQLite database: one file under FEWTUNE_HOME, the source of truth for everything.

The schema grows by numbered migrations (sqlite-utils `Migrations`), each applied in one
transaction by `open_db`, which every entry point calls. Designed up front for the Discord
frontend (owner, guild, channel and Discord message ids) and for promotion (an assistant's
fine-tuned model, promotions with their evaluation).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations
from sqlite_utils.utils import dedupe_keys

migrations = Migrations("fewtune")

_SCHEMA_V1 = [
    # Assistants: name_key is the case-folded name; unique within a scope (a guild, or a user's own).
    """CREATE TABLE assistants (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        scope TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        guild_id TEXT,
        description TEXT NOT NULL DEFAULT '',
        instructions TEXT NOT NULL,
        starters TEXT NOT NULL DEFAULT '[]',
        visibility TEXT NOT NULL CHECK (visibility IN ('private', 'guild', 'public')),
        model TEXT NOT NULL,
        fine_tuned_model TEXT,
        k INTEGER NOT NULL,
        selector TEXT NOT NULL CHECK (selector IN ('similarity', 'mmr', 'random', 'fixed')),
        temperature REAL NOT NULL,
        max_tokens INTEGER,
        version INTEGER NOT NULL DEFAULT 1,
        index_dirty INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (scope, name_key)
    )""",
    # Every version of an assistant, as a JSON snapshot, so any earlier one can be restored.
    """CREATE TABLE assistant_versions (
        id INTEGER PRIMARY KEY,
        assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        snapshot TEXT NOT NULL,
        changed_by TEXT NOT NULL,
        change TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        UNIQUE (assistant_id, version)
    )""",
    """CREATE TABLE examples (
        id INTEGER PRIMARY KEY,
        assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        turns TEXT,
        source TEXT NOT NULL CHECK (source IN ('manual', 'import', 'correction', 'demo')),
        author_id TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (assistant_id, content_hash)
    )""",
    "CREATE INDEX examples_assistant ON examples (assistant_id, id)",
    """CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        guild_id TEXT,
        channel_id TEXT,
        thread_id TEXT,
        frontend TEXT NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX conversations_thread ON conversations (thread_id)",
    # Messages of both roles. A reply records what produced it: model, examples, budget, timing.
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        user_id TEXT NOT NULL,
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),
        error TEXT,
        model TEXT,
        examples_used TEXT,
        trimmed TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_ms REAL,
        external_id TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX messages_conversation ON messages (conversation_id, id)",
    "CREATE INDEX messages_user ON messages (user_id)",
    "CREATE UNIQUE INDEX messages_external ON messages (external_id) WHERE external_id IS NOT NULL",
    """CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        rating INTEGER CHECK (rating IN (-1, 1)),
        correction TEXT,
        example_id INTEGER REFERENCES examples(id) ON DELETE SET NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX feedback_message ON feedback (message_id)",
    """CREATE TABLE user_preferences (
        user_id TEXT PRIMARY KEY,
        opted_out INTEGER NOT NULL DEFAULT 0,
        last_assistant_id INTEGER REFERENCES assistants(id) ON DELETE SET NULL,
        updated_at TEXT NOT NULL
    )""",
    # A channel or thread bound to an assistant (/assistant use).
    """CREATE TABLE bindings (
        channel_id TEXT PRIMARY KEY,
        assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
        guild_id TEXT,
        bound_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Promotions: one fine-tuning job on a provider, its evaluation and whether it was switched to.
    """CREATE TABLE promotions (
        id INTEGER PRIMARY KEY,
        assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
        provider TEXT NOT NULL,
        base_model TEXT NOT NULL,
        job_id TEXT,
        status TEXT NOT NULL,
        fine_tuned_model TEXT,
        dataset_stats TEXT,
        evaluation TEXT,
        previous_model TEXT,
        switched INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
]


@migrations()
def m001_initial(db: Database) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


@migrations()
def m002_external_ids(db: Database) -> None:
    # A reply a frontend splits into several messages (Discord's 2,000-character limit) has one
    # external id per part; any of them continues the conversation.
    db.execute(
        """CREATE TABLE external_ids (
            external_id TEXT PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE
        )"""
    )
    db.execute("CREATE INDEX external_ids_message ON external_ids (message_id)")
    db.execute(
        "INSERT INTO external_ids (external_id, message_id) "
        "SELECT external_id, id FROM messages WHERE external_id IS NOT NULL"
    )
    db.execute("DROP INDEX messages_external")
    db.execute("ALTER TABLE messages DROP COLUMN external_id")


@migrations()
def m003_promotion_previous_k(db: Database) -> None:
    # A switch may also set k to 0 (the fine-tuned model alone scored best); rollback restores it.
    db.execute("ALTER TABLE promotions ADD COLUMN previous_k INTEGER")


@migrations()
def m004_promotion_follower(db: Database) -> None:
    # Where a frontend shows the promotion's progress (JSON, e.g. Discord's channel and message),
    # so that it can go on following after a restart; NULL when nobody follows it.
    db.execute("ALTER TABLE promotions ADD COLUMN follower TEXT")


_ACTIVE = "status NOT IN ('succeeded', 'failed', 'cancelled')"


@migrations()
def m005_one_active_promotion(db: Database) -> None:
    # One active promotion per assistant, whichever frontend or process starts it. Before this
    # only a Discord bot's memory kept to it: older duplicates are ended so the index can exist.
    db.execute(
        f"UPDATE promotions SET status = 'failed', error = 'Superseded by a later promotion.' "
        f"WHERE {_ACTIVE} AND id NOT IN "
        f"(SELECT max(id) FROM promotions WHERE {_ACTIVE} GROUP BY assistant_id)"
    )
    db.execute(
        f"CREATE UNIQUE INDEX promotions_one_active ON promotions (assistant_id) WHERE {_ACTIVE}"
    )
    # A follower now holds the actor as Actor.to_dict wrote it, under "actor".
    db.execute(
        """UPDATE promotions SET follower = json_set(
            json_remove(follower, '$.user_id', '$.guild_id', '$.can_manage_guild'),
            '$.actor', json_object(
                'user_id', json_extract(follower, '$.user_id'),
                'guild_id', json_extract(follower, '$.guild_id'),
                'can_manage_guild', json(CASE WHEN json_extract(follower, '$.can_manage_guild')
                    THEN 'true' ELSE 'false' END)))
        WHERE follower IS NOT NULL AND json_extract(follower, '$.actor') IS NULL"""
    )


_SELECTORS_V1 = "selector IN ('similarity', 'mmr', 'random', 'fixed')"
_SELECTORS_V6 = "selector IN ('similarity', 'mmr', 'random', 'fixed', 'coverage')"


@migrations()
def m006_coverage_selector(db: Database) -> None:
    # A fifth selector. SQLite cannot alter a CHECK constraint, and rebuilding `assistants`
    # would cascade-delete every row that references it (foreign keys cannot be turned off inside
    # the migration's transaction), so the constraint's text is edited in place: the way SQLite's
    # own documentation gives for a change that leaves the stored rows as they are.
    (version,) = db.execute("PRAGMA schema_version").fetchone()
    db.execute("PRAGMA writable_schema=ON")
    db.execute(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'assistants'",
        [_SELECTORS_V1, _SELECTORS_V6],
    )
    db.execute(f"PRAGMA schema_version={version + 1}")
    db.execute("PRAGMA writable_schema=OFF")


@migrations()
def m007_assistant_history(db: Database) -> None:
    # How many earlier exchanges go into each prompt; NULL (every assistant made before) keeps
    # every one the token budget holds, as before.
    db.execute("ALTER TABLE assistants ADD COLUMN history INTEGER")


@migrations()
def m008_assistant_layout(db: Database) -> None:
    # How the examples sit in the prompt; every assistant made before keeps today's turns.
    db.execute("ALTER TABLE assistants ADD COLUMN layout TEXT NOT NULL DEFAULT 'turns'")


@migrations()
def m009_knowledge(db: Database) -> None:
    # Knowledge files an assistant answers from, and their chunks (the text the index embeds).
    # The content hash refuses the same file twice; `chunks` is the file's count of chunks.
    db.execute(
        """CREATE TABLE knowledge_files (
            id INTEGER PRIMARY KEY,
            assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('txt', 'md', 'pdf', 'html', 'csv', 'json')),
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            chunks INTEGER NOT NULL,
            added_by TEXT NOT NULL,
            added_at TEXT NOT NULL,
            UNIQUE (assistant_id, sha256)
        )"""
    )
    db.execute(
        """CREATE TABLE knowledge_chunks (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES knowledge_files(id) ON DELETE CASCADE,
            assistant_id INTEGER NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            location TEXT NOT NULL,
            text TEXT NOT NULL,
            UNIQUE (file_id, position)
        )"""
    )
    db.execute("CREATE INDEX knowledge_chunks_assistant ON knowledge_chunks (assistant_id, id)")
    # Like index_dirty, for the knowledge index: writes whose index step is in flight.
    db.execute("ALTER TABLE assistants ADD COLUMN knowledge_dirty INTEGER NOT NULL DEFAULT 0")


@migrations()
def m010_knowledge_used(db: Database) -> None:
    # The knowledge chunks a reply's prompt held, [1] first: [{"id": chunk id, "score": …}].
    # NULL on replies stored before: a training chat built from one searches as served.
    db.execute("ALTER TABLE messages ADD COLUMN knowledge_used TEXT")


@migrations()
def m011_knowledge_words(db: Database) -> None:
    # The words of each knowledge chunk in a full-text index (SQLite's FTS5), so a search finds
    # chunks by the words they share with a message as well as by meaning (assistants/knowledge/
    # ranking.py). Contentless: the text stays in knowledge_chunks alone, the index holds only
    # its words. `owner` ("a" and the assistant's id) keeps each assistant's search to its own
    # chunks. Triggers keep it in step with knowledge_chunks (cascaded deletes included).
    db.execute(
        "CREATE VIRTUAL TABLE knowledge_words USING fts5(text, owner, content='', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    db.execute(
        """CREATE TRIGGER knowledge_words_add AFTER INSERT ON knowledge_chunks BEGIN
            INSERT INTO knowledge_words (rowid, text, owner)
            VALUES (new.id, new.text, 'a' || new.assistant_id);
        END"""
    )
    db.execute(
        """CREATE TRIGGER knowledge_words_drop AFTER DELETE ON knowledge_chunks BEGIN
            INSERT INTO knowledge_words (knowledge_words, rowid, text, owner)
            VALUES ('delete', old.id, old.text, 'a' || old.assistant_id);
        END"""
    )
    db.execute(
        """CREATE TRIGGER knowledge_words_change AFTER UPDATE ON knowledge_chunks BEGIN
            INSERT INTO knowledge_words (knowledge_words, rowid, text, owner)
            VALUES ('delete', old.id, old.text, 'a' || old.assistant_id);
            INSERT INTO knowledge_words (rowid, text, owner)
            VALUES (new.id, new.text, 'a' || new.assistant_id);
        END"""
    )
    db.execute(
        "INSERT INTO knowledge_words (rowid, text, owner) "
        "SELECT id, text, 'a' || assistant_id FROM knowledge_chunks"
    )


@migrations()
def m012_knowledge_stamp(db: Database) -> None:
    # A mark of the state of an assistant's knowledge, so a process holding a copy of its chunks
    # in memory (assistants/knowledge/held.py) sees at one lookup whether the copy is current.
    # Every write of the knowledge index is bracketed by writes of `knowledge_dirty` (mark
    # before, unmark, repair or reindex after), and each of those draws a new stamp here.
    # Random rather than counted: an assistant created later under a deleted one's id never
    # meets a stamp of the old one's.
    db.execute("ALTER TABLE assistants ADD COLUMN knowledge_stamp INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE assistants SET knowledge_stamp = random()")
    db.execute(
        """CREATE TRIGGER knowledge_stamp AFTER UPDATE OF knowledge_dirty ON assistants BEGIN
            UPDATE assistants SET knowledge_stamp = random() WHERE id = new.id;
        END"""
    )


@migrations()
def m013_knowledge_words_held(db: Database) -> None:
    # The words ranking moved into memory, per assistant (assistants/knowledge/held.py): BM25
    # over an FTS5 table shared by every assistant read each word's rows across all of their
    # chunks (its cost grew with every assistant's files, and their counts weighed on each
    # other's scores). The table of m011 and its triggers go; the texts stay in knowledge_chunks.
    for trigger in ("add", "drop", "change"):
        db.execute(f"DROP TRIGGER IF EXISTS knowledge_words_{trigger}")
    db.execute("DROP TABLE IF EXISTS knowledge_words")


@migrations()
def m014_examples_stamp(db: Database) -> None:
    # The same mark for an assistant's examples (storage/held.py holds their vectors in memory):
    # every write of the example index is bracketed by writes of `index_dirty`, each of which
    # draws a new stamp. A new assistant draws one too, so one created under a deleted one's id
    # never meets the old one's stamp (0 for an assistant that never had an example).
    db.execute("ALTER TABLE assistants ADD COLUMN examples_stamp INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE assistants SET examples_stamp = random()")
    db.execute(
        """CREATE TRIGGER examples_stamp AFTER UPDATE OF index_dirty ON assistants BEGIN
            UPDATE assistants SET examples_stamp = random() WHERE id = new.id;
        END"""
    )
    db.execute(
        """CREATE TRIGGER examples_stamp_new AFTER INSERT ON assistants BEGIN
            UPDATE assistants SET examples_stamp = random() WHERE id = new.id;
        END"""
    )


class Store(Database):
    """sqlite-utils' Database, reading plain SELECTs straight from the connection.

    sqlite-utils runs every `query` inside a SAVEPOINT so that a statement which returns no rows
    can be rolled back; a SELECT never writes, so here it runs alone: one statement instead of
    three. Each statement hands Python's GIL over and back, and with the Discord bot's loop busy
    each return waits its turn: under 200 chats at once the guard tripled the time a message
    spent in the core (bench/discord_load.py).
    """

    def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> Generator[dict, None, None]:
        if not sql.lstrip()[:7].upper().startswith("SELECT"):
            return super().query(sql, params)
        if self._tracer:
            self._tracer(sql, params)
        cursor = self.conn.execute(sql, params if params is not None else ())
        keys = dedupe_keys(d[0] for d in cursor.description)
        return (dict(zip(keys, row, strict=True)) for row in cursor)


def insert_row(db: Database, table: str, row: dict[str, Any]) -> int:
    """Insert one row with one statement; returns its id. For the chat's hot path, where
    sqlite-utils' `insert` first looks the table and views up (several statements per row).
    The caller holds the write lock and, when it needs one, the transaction."""
    columns = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join("?" * len(row))
    cursor = db.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', list(row.values()))
    return int(cursor.lastrowid)  # type: ignore[arg-type]


def _connect(path: Path) -> Database:
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db = Store(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    return db


class ThreadLocalDatabase:
    """A sqlite-utils Database per thread, behind one object.

    The core runs work in threads (asyncio.to_thread), and sqlite-utils wraps each query in a
    SAVEPOINT on its connection: two threads sharing one connection interleave savepoints and
    fail. One connection per thread lets reads run side by side (WAL) while SQLite serialises
    the writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Database] = []
        self._guard = threading.Lock()

    def database(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path)
            self._local.db = db
            with self._guard:
                self._all.append(db)
        return db

    def __getattr__(self, name: str) -> Any:
        return getattr(self.database(), name)

    def __getitem__(self, table: str) -> Any:
        return self.database()[table]

    def close(self) -> None:
        with self._guard:
            for db in self._all:
                db.conn.close()
            self._all.clear()
        self._local = threading.local()


def open_db(path: str | Path) -> Database:
    """Open (creating if needed) the database, in WAL mode with foreign keys, and migrate it.

    Returns a per-thread database (ThreadLocalDatabase) that behaves as a sqlite-utils Database.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = ThreadLocalDatabase(path)
    migrations.apply(db.database())
    return cast(Database, db)  # it behaves as one; typed so, callers need not know
