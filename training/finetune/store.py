"""The fine-tuning API's state in SQLite: files, jobs, events and checkpoints.

The tables live in a database of their own, FEWTUNE_HOME/finetune.db, under their own migration
set ("fewtune-server"): a GPU server never creates or migrates the core's tables, and each side
grows its schema alone. Jobs and files that an earlier version recorded in the core's database
(fewtune.db) are copied over once, when finetune.db is created. File bytes live under
FEWTUNE_HOME/files/<file id>, written through a temporary file and a rename.
Ids are random and checked against strict patterns before they are used anywhere, paths
included. One lock guards the connection: the API (event loop) and the worker (threads) share it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, cast

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from storage.db import ThreadLocalDatabase
from storage.settings import Settings

migrations = Migrations("fewtune-server")

DB_NAME = "finetune.db"
TABLES = ("ft_files", "ft_jobs", "ft_events", "ft_checkpoints")

FINISHED = ("succeeded", "failed", "cancelled")  # a job in one of these never runs again
ACTIVE = ("validating_files", "queued", "running")
_ALPHABET = string.ascii_letters + string.digits
_PATTERNS = {
    prefix: re.compile(rf"^{prefix}-[A-Za-z0-9]{{24}}$")
    for prefix in ("file", "ftjob", "ftevent", "ftckpt")
}


@migrations()
def m001_fine_tuning(db: Database) -> None:
    db.execute(
        """CREATE TABLE ft_files (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            n_examples INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE ft_jobs (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            model TEXT NOT NULL,
            training_file TEXT NOT NULL,
            validation_file TEXT,
            suffix TEXT,
            seed INTEGER NOT NULL,
            requested TEXT NOT NULL,      -- hyperparameters as asked ("auto" or numbers), JSON
            hyperparameters TEXT,         -- resolved to numbers once the files are validated
            options TEXT NOT NULL,        -- fewtune extension: trainer options, JSON
            metadata TEXT,
            status TEXT NOT NULL,
            fine_tuned_model TEXT,
            trained_tokens INTEGER,
            error TEXT,                   -- {"code", "message", "param"} JSON
            pid INTEGER,                  -- the training process while running
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            estimated_finish INTEGER
        )"""
    )
    db.execute("CREATE INDEX ft_jobs_status ON ft_jobs (status, seq)")
    db.execute(
        """CREATE TABLE ft_events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            type TEXT NOT NULL,
            data TEXT
        )"""
    )
    db.execute("CREATE INDEX ft_events_job ON ft_events (job_id, seq)")
    db.execute(
        """CREATE TABLE ft_checkpoints (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            metrics TEXT NOT NULL,
            created_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX ft_checkpoints_job ON ft_checkpoints (job_id, seq)")


def _adopt_rows(db: Database, core_db: Path) -> None:
    """Copy the fine-tuning rows an earlier version kept in the core's database, read-only there
    (its tables are left as they were), so that a server upgraded mid-job still lists and resumes
    its jobs."""
    if not core_db.is_file():
        return
    with closing(sqlite3.connect(f"{core_db.resolve().as_uri()}?mode=ro", uri=True)) as old:
        present = {row[0] for row in old.execute("SELECT name FROM sqlite_master")}
        with db.conn:
            for table in TABLES:
                if table not in present:
                    continue
                cursor = old.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cursor.description]
                marks = ", ".join("?" * len(columns))
                db.conn.executemany(
                    f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})", cursor
                )


def new_id(prefix: str) -> str:
    """A random id such as `ftjob-` + 24 letters and digits."""
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def valid_id(prefix: str, value: str) -> bool:
    """True when `value` is a well-formed id of kind `prefix` (safe in a path)."""
    return bool(_PATTERNS[prefix].fullmatch(value))


def now() -> int:
    return int(time.time())


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


class FineTuneStore:
    """Rows of the fine-tuning API, and the folders their bytes live in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files_dir = settings.home / "files"
        self.jobs_dir = settings.home / "jobs"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        path = settings.home / DB_NAME
        created = not path.exists()
        self.db = cast(Database, ThreadLocalDatabase(path))
        migrations.apply(self.db)
        if created:
            _adopt_rows(self.db, settings.db_path)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def one_step(self) -> Iterator[None]:
        """Hold the store across several calls (a status change and its event) so that no other
        thread's change lands between them."""
        with self._lock:
            yield

    @contextmanager
    def _tx(self) -> Iterator[Database]:
        with self._lock, self.db.conn:
            yield self.db

    def _one(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    def _all(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    # -- files --------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        if not valid_id("file", file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.files_dir / file_id

    def add_file(self, filename: str, purpose: str, data: bytes, n_examples: int) -> dict:
        file_id = new_id("file")
        target = self.file_path(file_id)
        temporary = target.with_name(f".{file_id}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        row = {
            "id": file_id,
            "filename": filename,
            "purpose": purpose,
            "bytes": len(data),
            "n_examples": n_examples,
            "created_at": now(),
        }
        with self._tx() as db:
            db.table("ft_files").insert(row)
        return row

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        if not valid_id("file", file_id):
            return None
        return self._one("SELECT * FROM ft_files WHERE id = ?", [file_id])

    def list_files(self, after: str | None, limit: int, purpose: str | None) -> list[dict]:
        """Newest first, starting after the file `after`; one more than `limit` if there are."""
        sql, params = "SELECT * FROM ft_files WHERE 1", []
        if purpose:
            sql += " AND purpose = ?"
            params.append(purpose)
        if after:
            sql += " AND seq < (SELECT seq FROM ft_files WHERE id = ?)"
            params.append(after)
        return self._all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as db:
            deleted = db.execute("DELETE FROM ft_files WHERE id = ?", [file_id]).rowcount
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(deleted)

    # -- jobs ---------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not valid_id("ftjob", job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs_dir / job_id

    def add_job(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {
            **row,
            "id": new_id("ftjob"),
            "status": "validating_files",
            "created_at": now(),
        }
        for key in ("requested", "options", "metadata"):
            row[key] = json.dumps(row[key]) if row.get(key) is not None else None
        with self._tx() as db:
            db.table("ft_jobs").insert(row)
        return self.get_job(row["id"]) or {}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        if not valid_id("ftjob", job_id):
            return None
        return self._one("SELECT * FROM ft_jobs WHERE id = ?", [job_id])

    def list_jobs(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first, starting after the job `after`; one more than `limit` if there are."""
        sql, params = "SELECT * FROM ft_jobs", []
        if after:
            sql += " WHERE seq < (SELECT seq FROM ft_jobs WHERE id = ?)"
            params.append(after)
        return self._all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])

    def jobs_with_status(self, status: str) -> list[dict[str, Any]]:
        """Oldest first: the order the worker takes them in."""
        return self._all("SELECT * FROM ft_jobs WHERE status = ? ORDER BY seq", [status])

    def update_job(self, job_id: str, only_if: tuple[str, ...] = (), **values: Any) -> bool:
        """Set columns; with `only_if`, only while the status is one of those (a state change)."""
        for key in ("error", "hyperparameters"):
            if key in values and values[key] is not None and not isinstance(values[key], str):
                values[key] = json.dumps(values[key])
        columns = ", ".join(f"{name} = ?" for name in values)
        sql, params = f"UPDATE ft_jobs SET {columns} WHERE id = ?", [*values.values(), job_id]
        if only_if:
            sql += f" AND status IN ({', '.join('?' for _ in only_if)})"
            params += list(only_if)
        with self._tx() as db:
            return db.execute(sql, params).rowcount > 0

    def finish_job(self, job_id: str, status: str, only_if: tuple[str, ...], **values: Any) -> bool:
        return self.update_job(
            job_id, only_if, status=status, finished_at=now(), pid=None, **values
        )

    def fail_job(self, job_id: str, code: str, message: str, param: str | None = None) -> bool:
        """Fail a job that is not over yet, with an OpenAI-shaped error and an event saying why."""
        error = {"code": code, "message": message, "param": param}
        if not self.finish_job(job_id, "failed", ACTIVE, error=error, estimated_finish=None):
            return False
        self.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")
        return True

    # -- events and checkpoints ---------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        row = {
            "id": new_id("ftevent"),
            "job_id": job_id,
            "created_at": now(),
            "level": level,
            "message": message,
            "type": type,
            "data": json.dumps(data) if data is not None else None,
        }
        with self._tx() as db:
            db.table("ft_events").insert(row)

    def list_events(self, job_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first (as OpenAI lists them); one more than `limit` if there are."""
        return self._page("ft_events", job_id, after, limit)

    def add_checkpoint(self, job_id: str, step: int, metrics: dict[str, Any]) -> None:
        row = {
            "id": new_id("ftckpt"),
            "job_id": job_id,
            "step": step,
            "metrics": json.dumps(metrics),
            "created_at": now(),
        }
        with self._tx() as db:
            db.table("ft_checkpoints").insert(row)

    def list_checkpoints(self, job_id: str, after: str | None, limit: int) -> list[dict]:
        return self._page("ft_checkpoints", job_id, after, limit)

    def _page(self, table: str, job_id: str, after: str | None, limit: int) -> list[dict]:
        sql, params = f"SELECT * FROM {table} WHERE job_id = ?", [job_id]
        if after:
            sql += f" AND seq < (SELECT seq FROM {table} WHERE id = ?)"
            params.append(after)
        return self._all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])


# -- API shapes -----------------------------------------------------------------------------


def file_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def job_body(row: dict[str, Any]) -> dict[str, Any]:
    hyperparameters = _loads(row["hyperparameters"]) or _loads(row["requested"])
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "error": _loads(row["error"]),
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "model": row["model"],
        "organization_id": "fewtune",
        "result_files": [],
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": row["estimated_finish"],
        "integrations": [],
        "metadata": _loads(row["metadata"]),
        "user_provided_suffix": row["suffix"],
    }


def event_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": _loads(row["data"]),
    }


def checkpoint_body(row: dict[str, Any], fine_tuned_model: str) -> dict[str, Any]:
    step = row["step"]
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": f"{fine_tuned_model}:ckpt-step-{step}",
        "fine_tuning_job_id": row["job_id"],
        "metrics": {"step": step, **_loads(row["metrics"])},
        "step_number": step,
    }


def page_body(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """An OpenAI list: `data` and `has_more` (the store fetched one row more than `limit`)."""
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
