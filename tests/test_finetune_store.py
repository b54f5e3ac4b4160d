"""The fine-tuning store keeps its own tables in its own database and never creates the core's."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from storage.db import open_db
from storage.settings import load_settings
from training.finetune.store import DB_NAME, FineTuneStore


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def record_a_job(store: FineTuneStore) -> str:
    file = store.add_file("train.jsonl", "fine-tune", b"{}\n", 1)
    job = store.add_job(
        {
            "model": "base",
            "training_file": file["id"],
            "validation_file": None,
            "suffix": None,
            "seed": 1,
            "requested": {},
            "options": {},
            "metadata": None,
        }
    )
    return str(job["id"])


def test_a_fresh_servers_store_creates_none_of_the_cores_tables(tmp_path):
    settings = load_settings(tmp_path)
    store = FineTuneStore(settings)
    record_a_job(store)
    store.close()
    assert not settings.db_path.exists()  # the core's fewtune.db: not even created
    assert tables(tmp_path / DB_NAME) == {
        "_sqlite_migrations",
        "ft_files",
        "ft_jobs",
        "ft_events",
        "ft_checkpoints",
    }


def test_jobs_an_earlier_version_kept_in_the_cores_database_are_adopted_once(tmp_path):
    earlier = load_settings(tmp_path / "earlier")
    store = FineTuneStore(earlier)
    job_id = record_a_job(store)
    store.close()
    # The earlier layout: the fine-tuning tables inside the core's database, next to its own.
    settings = load_settings(tmp_path / "home")
    shutil.copy(earlier.home / DB_NAME, settings.db_path)
    open_db(settings.db_path).close()
    core_tables = tables(settings.db_path)

    store = FineTuneStore(settings)
    assert store.get_job(job_id)["status"] == "validating_files"
    assert len(store.list_files(None, 10, None)) == 1
    store.close()
    assert tables(settings.db_path) == core_tables  # read, left as it was

    with sqlite3.connect(settings.home / DB_NAME) as db:
        db.execute("DELETE FROM ft_jobs")
    store = FineTuneStore(settings)  # finetune.db exists now: nothing is copied again
    assert store.get_job(job_id) is None
    store.close()
