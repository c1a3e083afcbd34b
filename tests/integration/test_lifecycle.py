"""An app's close() gives back everything it opened: connections, sockets, threads."""

from __future__ import annotations

import gc
import os
import threading
import warnings

import pytest

import conveyor

from .helpers import only_run


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_file_descriptors_and_threads(db_url) -> None:
    gc.collect()
    fds_before = _open_fds()
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = conveyor.Conveyor("test", database=db_url)

        @app.function(on="life.ping")
        def ping(ctx):
            return ctx.step.run("pong", lambda: "pong")

        worker = app.worker(concurrency=2)
        worker.start()
        handle = ping.invoke({})
        assert handle.result(timeout=20) == "pong"
        worker.stop(grace=5)
        event_id = app.send("life.ping")
        app.drain(timeout=10)
        assert only_run(app, event_id).output == "pong"
        app.close()
        del app, worker, handle, ping
        gc.collect()
    leaked_warnings = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked_warnings == []
    leaked_threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leaked_threads == [], f"threads left running after close(): {leaked_threads}"
    leaked = {
        fd: os.readlink(f"/proc/self/fd/{fd}")
        for fd in _open_fds() - fds_before
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert leaked == {}, f"file descriptors left open after close(): {leaked}"


def test_close_is_idempotent(app) -> None:
    app.close()
    app.close()


def test_a_running_worker_is_in_the_registry_until_it_stops(app) -> None:
    @app.function(pool="live")
    def noop(ctx):
        return None

    worker = app.worker(concurrency=3)
    worker.start()
    try:
        [row] = app._engine().workers()
        assert row.id == worker.name and row.kind == "worker" and row.pid == os.getpid()
        assert row.pools == ("live",) and row.concurrency == 3
    finally:
        worker.stop(grace=5)
    assert app._engine().workers() == []


def test_a_running_worker_keeps_beating_in_the_registry(app, wait_until) -> None:
    """Not only the entry written at start: while it serves, the worker's entry is written
    again every interval (a dead worker is one whose entry stopped moving)."""

    @app.function()
    def noop(ctx):
        return None

    worker = app.worker(concurrency=1)
    worker.presence.interval = 0.05
    worker.start()
    try:
        [first] = app._engine().workers()
        wait_until(lambda: app._engine().workers()[0].seen_at > first.seen_at, timeout=20,
                   message="a second beat of the worker's registry entry")
    finally:
        worker.stop(grace=5)
