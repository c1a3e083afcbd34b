"""SQLite specifics: WAL + synchronous FULL, several processes sharing one file."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import conveyor

from .helpers import only_run


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


def test_database_from_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "sqlite:///" + str(path))
    app = conveyor.Conveyor("env")
    try:
        _use(app)
    finally:
        app.close()
    assert path.exists()


def test_relative_sqlite_url(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = conveyor.Conveyor("rel", database="sqlite:///jobs.db")
    try:
        _use(app)
    finally:
        app.close()
    assert (tmp_path / "jobs.db").exists()


WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import conveyor

    url, log_dir, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    app = conveyor.Conveyor("test", database=url)

    @app.function(on="sqlite.shared")
    def whoami(ctx):
        def body():
            threading.Event().wait(0.05)
            return os.getpid()
        return ctx.step.run("whoami", body)

    worker = app.worker(concurrency=1)
    worker.start()
    open(ready, "w").close()
    sys.stdin.read()  # run until the test closes our stdin
    worker.stop(grace=5)
    app.close()
    """
)


def test_two_worker_processes_share_one_file(app, db_url, tmp_path, wait_until) -> None:
    @app.function(on="sqlite.shared")
    def whoami(ctx):  # registered here too, so that this process can route the events
        raise AssertionError("the test process must not run this")

    procs = []
    ready_files = [tmp_path / f"ready-{i}" for i in range(2)]
    try:
        for ready in ready_files:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER_SCRIPT, db_url, str(tmp_path), str(ready)],
                    stdin=subprocess.PIPE,
                    env={**os.environ},
                )
            )
        wait_until(
            lambda: all(r.exists() for r in ready_files),
            timeout=30,
            message="both worker processes to start",
        )
        ids = [app.send("sqlite.shared", {"i": i}) for i in range(30)]
        wait_until(
            lambda: all(app.runs_for_event(e) and only_run(app, e).status == "completed" for e in ids),
            timeout=60,
            message="all runs to complete",
        )
        pids = {only_run(app, e).output for e in ids}
        assert pids == {p.pid for p in procs}, f"outputs came from {pids}"
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0]


SCHEMA_RACE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import conveyor
    url, go, event_id = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    time.sleep(max(0.0, go - time.time()))
    app = conveyor.Conveyor("race", database=url)
    app.send("sqlite.race", {"from": event_id}, id=event_id)
    app.close()
    """
)


def test_many_processes_creating_the_schema_at_once(tmp_path) -> None:
    import time

    url = "sqlite:///" + str(tmp_path / "race.db")
    go = time.time() + 1.5  # all start their first use at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEMA_RACE_SCRIPT, url, str(go), f"evt-{i}"],
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            errors.append(err.decode())
    assert errors == []

    app = conveyor.Conveyor("race", database=url)
    try:

        @app.function(on="sqlite.race")
        def raced(ctx):
            return ctx.event.data["from"]

        for i in range(4):  # every event was stored: a resend with its id is ignored
            app.send("sqlite.race", {"from": "resend"}, id=f"evt-{i}")
        app.drain(timeout=10)
        for i in range(4):
            assert app.runs_for_event(f"evt-{i}") == []
    finally:
        app.close()
