"""drain() and background workers; leases kept alive by heartbeats."""

from __future__ import annotations

import threading
import time

import pytest

import conveyor

from .helpers import only_run, step


def test_drain_processes_everything_due(app, tally) -> None:
    @app.function(on="drain.work")
    def work(ctx):
        a = ctx.step.run("a", lambda: tally.hit("a") and ctx.event.data["i"])
        return ctx.step.run("b", lambda: a * 2)

    ids = [app.send("drain.work", {"i": i}) for i in range(10)]
    processed = app.drain(timeout=30)
    assert isinstance(processed, int) and processed >= 10
    assert [only_run(app, e).output for e in ids] == [i * 2 for i in range(10)]
    assert tally["a"] == 10
    assert app.drain(timeout=5) == 0, "nothing was left to do"


def test_drain_returns_promptly_with_nothing_due(app) -> None:
    @app.function()
    def far_future(ctx):
        ctx.step.sleep("month", 30 * 24 * 3600)

    handle = far_future.invoke({})
    started = time.monotonic()
    app.drain(timeout=20)
    assert time.monotonic() - started < 10, "drain waited for a sleep beyond its timeout"
    assert handle.status() == "waiting"


def test_invoke_result_with_background_worker(app, start_worker) -> None:
    @app.function()
    def add(ctx):
        return ctx.step.run("add", lambda: ctx.event.data["a"] + ctx.event.data["b"])

    worker = start_worker(app, concurrency=2)
    handle = add.invoke({"a": 2, "b": 3})
    assert isinstance(handle.id, str)
    assert handle.result(timeout=20) == 5
    assert handle.status() == "completed"
    worker.stop(grace=5)
    worker.stop(grace=5)  # idempotent


def test_result_timeout_raises_run_timeout(app) -> None:
    @app.function()
    def nobody_runs_me(ctx):
        return 1

    handle = nobody_runs_me.invoke({})  # no worker, no drain
    started = time.monotonic()
    with pytest.raises(conveyor.RunTimeout):
        handle.result(timeout=0.3)
    assert time.monotonic() - started < 5
    assert handle.status() == "queued"


def test_worker_stop_returns_promptly_when_idle(app) -> None:
    @app.function(on="worker.idle")
    def idle(ctx):
        return None

    worker = app.worker(concurrency=2)
    worker.start()
    started = time.monotonic()
    worker.stop(grace=1)
    assert time.monotonic() - started < 3


def test_worker_stop_finishes_in_flight_work(app, tally, wait_until) -> None:
    release = threading.Event()

    @app.function(on="worker.inflight")
    def inflight(ctx):
        def body():
            tally.hit("started")
            release.wait(10)
            return "finished"

        return ctx.step.run("body", body)

    worker = app.worker(concurrency=1)
    worker.start()
    event_id = app.send("worker.inflight")
    wait_until(lambda: tally["started"] == 1, message="the step to start")
    stopper = threading.Thread(target=worker.stop, kwargs={"grace": 10})
    stopper.start()
    release.set()
    stopper.join(15)
    assert not stopper.is_alive(), "stop(grace=10) did not return"
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == "finished"


def test_worker_stop_with_stuck_step_respects_grace(app, tally, wait_until) -> None:
    release = threading.Event()

    @app.function(on="worker.stuck")
    def stuck(ctx):
        return ctx.step.run("body", lambda: tally.hit("started") and release.wait(30))

    worker = app.worker(concurrency=1)
    worker.start()
    app.send("worker.stuck")
    wait_until(lambda: tally["started"] == 1, message="the step to start")
    started = time.monotonic()
    try:
        worker.stop(grace=0.5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 5, f"stop(grace=0.5) took {elapsed:.1f}s"


def test_long_step_keeps_its_lease_with_two_workers(make_app, tally, wait_until) -> None:
    """A step far longer than the lease runs once: heartbeats keep the lease."""

    def register(app):
        @app.function(on="lease.long", retries=3)
        def long_step(ctx):
            def body():
                tally.hit("body")
                threading.Event().wait(2.0)  # the workload: 4 lease lengths
                return "done"

            return ctx.step.run("long", body)

        return long_step

    app_a = make_app(lease_seconds=0.5)
    app_b = make_app(lease_seconds=0.5)
    register(app_a)
    register(app_b)
    workers = [app_a.worker(concurrency=2), app_b.worker(concurrency=2)]
    for w in workers:
        w.start()
    try:
        event_id = app_a.send("lease.long")
        wait_until(
            lambda: app_a.runs_for_event(event_id) and only_run(app_a, event_id).status == "completed",
            timeout=30,
            message="the long run to complete",
        )
        # a second worker stealing the job would have started the body again by now
        run = only_run(app_b, event_id)
    finally:
        for w in workers:
            w.stop(grace=5)
    assert tally["body"] == 1, f"the long step ran {tally['body']} times"
    assert run.output == "done"
    assert step(run, "long").attempts == 1
