"""SQLite specifics: WAL + synchronous FULL on the app's connections, relative paths.

Only these tests are SQLite-only (``pytestmark``); what holds for every backend
(several processes on one database, concurrent schema creation, the database from
the environment) lives in ``test_processes.py`` and runs on each.
"""

from __future__ import annotations

import gc
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import conveyor

from .helpers import only_run

pytestmark = pytest.mark.backends("sqlite")


def _use(app) -> None:
    @app.function(on="sqlite.touch")
    def touch(ctx):
        return ctx.step.run("touch", lambda: "ok")

    event_id = app.send("sqlite.touch")
    app.drain(timeout=10)
    assert only_run(app, event_id).status == "completed"


def test_journal_mode_is_wal(app, db_path) -> None:
    _use(app)
    assert db_path.exists()
    with closing(sqlite3.connect(db_path)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert mode.lower() == "wal"


def _app_connections(db_path: Path) -> list[sqlite3.Connection]:
    """Open sqlite3 connections (usable from this thread) whose main db is ``db_path``."""
    found = []
    for obj in gc.get_objects():
        if not isinstance(obj, sqlite3.Connection):
            continue
        try:
            rows = obj.execute("PRAGMA database_list").fetchall()
        except sqlite3.Error:  # closed, or bound to another thread
            continue
        if any(name == "main" and file and Path(file).resolve() == db_path.resolve() for _, name, file in rows):
            found.append(obj)
    return found


def test_synchronous_is_full_on_the_apps_connections(app, db_path) -> None:
    _use(app)  # drain runs in this thread: the app's connection is usable from here
    conns = _app_connections(db_path)
    assert conns, "found no open connection of the app to inspect"
    levels = [conn.execute("PRAGMA synchronous").fetchone()[0] for conn in conns]
    assert levels and all(level == 2 for level in levels), f"synchronous levels: {levels}"
    modes = [conn.execute("PRAGMA journal_mode").fetchone()[0].lower() for conn in conns]
    assert set(modes) == {"wal"}


def test_relative_sqlite_url(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = conveyor.Conveyor("rel", database="sqlite:///jobs.db")
    try:
        _use(app)
    finally:
        app.close()
    assert (tmp_path / "jobs.db").exists()
