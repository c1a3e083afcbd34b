"""Function concurrency limits cap bodies running at once; sleeping runs do not count."""

from __future__ import annotations

import threading
from collections import defaultdict

import conveyor

from .helpers import Overlap, only_run


def test_limit_one_never_overlaps(app, start_worker, wait_until) -> None:
    overlap = Overlap()

    @app.function(on="conc.one", concurrency=1)
    def exclusive(ctx):
        def body():
            with overlap:
                threading.Event().wait(0.1)  # the workload: hold the slot a while
            return ctx.event.data["i"]

        first = ctx.step.run("first", body)
        second = ctx.step.run("second", body)
        return first + second

    start_worker(app, concurrency=4)
    ids = [app.send("conc.one", {"i": i}) for i in range(4)]
    wait_until(
        lambda: all(app.runs_for_event(e) and only_run(app, e).status == "completed" for e in ids),
        timeout=30,
        message="all four runs to complete",
    )
    assert overlap.entered == 8
    assert overlap.max_active == 1, f"{overlap.max_active} bodies ran at once with limit 1"
    assert sorted(only_run(app, e).output for e in ids) == [0, 2, 4, 6]


def test_without_limit_the_worker_runs_bodies_in_parallel(app, start_worker, wait_until) -> None:
    """Control for the test above: the worker really has 4 slots."""
    barrier = threading.Barrier(4, timeout=10)

    @app.function(on="conc.free")
    def free(ctx):
        return ctx.step.run("meet", lambda: barrier.wait() >= 0)

    start_worker(app, concurrency=4)
    ids = [app.send("conc.free", {"i": i}) for i in range(4)]
    wait_until(lambda: all(app.runs_for_event(e) and only_run(app, e).done for e in ids), timeout=30)
    assert [only_run(app, e).status for e in ids] == ["completed"] * 4


def test_keyed_limit_applies_per_key(app, start_worker, wait_until) -> None:
    lock = threading.Lock()
    active: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    @app.function(on="conc.keyed", concurrency=conveyor.Concurrency(limit=1, key="event.data.user"))
    def per_user(ctx):
        user = ctx.event.data["user"]

        def body():
            with lock:
                active[user] += 1
                peak[user] = max(peak[user], active[user])
            threading.Event().wait(0.05)
            with lock:
                active[user] -= 1
            return user

        return ctx.step.run("work", body)

    start_worker(app, concurrency=4)
    ids = [app.send("conc.keyed", {"user": u}) for u in ["a", "b", "a", "b", "a", "b"]]
    wait_until(
        lambda: all(app.runs_for_event(e) and only_run(app, e).status == "completed" for e in ids),
        timeout=30,
    )
    assert dict(peak) == {"a": 1, "b": 1}


def test_sleeping_runs_do_not_count_toward_the_limit(app, tally, start_worker, wait_until) -> None:
    @app.function(on="conc.sleepy", concurrency=1)
    def limited(ctx):
        ctx.step.run("start", lambda: tally.hit("start"))
        if ctx.event.data.get("sleep"):
            ctx.step.sleep("nap", 1.5)
        return ctx.step.run("end", lambda: tally.hit("end") and ctx.event.data.get("sleep", False))

    start_worker(app, concurrency=4)
    sleeper_event = app.send("conc.sleepy", {"sleep": True})
    wait_until(lambda: app.runs_for_event(sleeper_event))
    sleeper = only_run(app, sleeper_event).id
    wait_until(lambda: app.get_run(sleeper).status == "waiting", message="the sleeper to sleep")

    other_event = app.send("conc.sleepy", {"sleep": False})
    wait_until(
        lambda: app.runs_for_event(other_event) and only_run(app, other_event).status == "completed",
        timeout=10,
        message="the second run to complete while the first (limit 1) sleeps",
    )
    assert app.get_run(sleeper).status == "waiting", "second run waited for the sleeper"
    wait_until(lambda: app.get_run(sleeper).status == "completed", timeout=15)
    assert app.get_run(sleeper).output is True
