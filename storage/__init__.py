"""Where fewtune keeps things: SQLite (the truth), the chromadb example index, embeddings, settings."""

from storage.db import open_db
from storage.embeddings import Embedder, EmbedderUnavailable
from storage.index import ExampleIndex, Hit, IndexUnavailable
from storage.settings import Settings, SettingsError, fewtune_home, load_settings

__all__ = [
    "Embedder",
    "EmbedderUnavailable",
    "ExampleIndex",
    "Hit",
    "IndexUnavailable",
    "Settings",
    "SettingsError",
    "fewtune_home",
    "load_settings",
    "open_db",
]
