"""Open a storage backend from a database URL."""

from __future__ import annotations

import os

from conveyor.errors import ConfigError
from conveyor.storage.base import Storage

DEFAULT_URL = "sqlite:///conveyor.db"


def resolve_url(database: str | None) -> str:
    url = database or os.environ.get("CONVEYOR_DATABASE_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise ConfigError(f"database must be a URL string, got {type(url).__name__}")
    return url


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` is relative to the working directory; ``sqlite:////abs.db`` absolute."""
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise ConfigError(f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
    return path if path.startswith("/") else os.path.abspath(path)


def open_storage(url: str) -> Storage:
    if url.startswith("sqlite:"):
        from conveyor.storage.sqlite.backend import SQLiteStorage

        return SQLiteStorage(sqlite_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        from conveyor.storage.postgres.backend import PostgresStorage

        return PostgresStorage(url)
    raise ConfigError(f"unsupported database URL {url!r}: expected sqlite:///… or postgresql://…")
