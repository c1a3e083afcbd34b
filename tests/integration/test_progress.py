"""``Run.progress``: a parent's children counted by status, with rate and ETA.

While children are held (blocked in a step, or waiting for an event), the counts of
``app.get_run(parent).progress`` must agree with the children's actual statuses.
Every test runs on every backend.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

from tests.conftest import wait_until

import conveyor

STATUSES = ("queued", "running", "waiting", "completed", "failed", "cancelled")
SLOTS = 4  # the concurrency limit of the blocked children's group
N_QUICK = 4  # return at once
N_WAIT = 4  # wait for an event: status "waiting", no slot held
N_BLOCK = 12  # block on a gate: SLOTS of them "running", the rest "queued" behind the concurrency limit
N = N_QUICK + N_WAIT + N_BLOCK


def _children_by_status(app, parent_id: str, function: str) -> Counter[str]:
    children = [r for r in app.list_runs(function=function, limit=10_000) if r.parent_id == parent_id]
    return Counter(r.status for r in children)


def _progress_counts(progress) -> dict[str, int]:
    return {s: getattr(progress, s) for s in STATUSES}


def test_progress_counts_agree_with_the_childrens_statuses(app, start_worker, tally) -> None:
    gate = threading.Event()

    # the blocked children share one concurrency key (SLOTS run, the rest stay queued);
    # every other child has a key of its own, so it never waits behind them
    @app.function(retries=0, concurrency=conveyor.Concurrency(limit=SLOTS, key="event.data.group"))
    def held_child(ctx):
        kind = ctx.event.data["kind"]
        if kind == "wait":
            got = ctx.step.wait_for_event("go", event="progress.go", match="data.key", timeout=timedelta(minutes=5))
            return {"n": ctx.event.data["n"], "woke": got is not None}

        def work():
            tally.hit("started", ctx.event.data["n"])
            if kind == "block":
                assert gate.wait(30), "the test never opened the gate"
            return ctx.event.data["n"]

        return {"n": ctx.step.run("work", work)}

    @app.function(on="progress.start")
    def watched_parent(ctx):
        items = (
            [{"n": n, "kind": "quick", "group": f"q{n}"} for n in range(N_QUICK)]
            + [{"n": N_QUICK + n, "kind": "wait", "key": "k", "group": f"w{n}"} for n in range(N_WAIT)]
            + [{"n": N_QUICK + N_WAIT + n, "kind": "block", "group": "block"} for n in range(N_BLOCK)]
        )
        results = ctx.step.map("fan", held_child, items)
        return ctx.step.run("reduce", lambda res: [r["n"] for r in res], results)

    try:
        start_worker(app, concurrency=32)
        event_id = app.send("progress.start")
        (parent,) = wait_until(lambda: app.runs_for_event(event_id), timeout=10, message="the parent run")

        # steady state: quick ones done, waiters waiting, every slot held by a blocked child
        expected = {"queued": N_BLOCK - SLOTS, "running": SLOTS, "waiting": N_WAIT, "completed": N_QUICK}

        def steady() -> bool:
            actual = _children_by_status(app, parent.id, "held-child")
            return all(actual[s] == n for s, n in expected.items())

        wait_until(
            steady,
            timeout=20,
            message=lambda: f"children {dict(_children_by_status(app, parent.id, 'held-child'))} to be {expected}",
        )
        actual = _children_by_status(app, parent.id, "held-child")
        held = app.get_run(parent.id)
        assert held.status == "waiting", held
        progress = held.progress
        assert isinstance(progress, conveyor.Progress)
        assert _progress_counts(progress) == {s: actual[s] for s in STATUSES}, (
            f"progress {progress} disagrees with the children's statuses {dict(actual)}"
        )
        assert progress.total == N
        assert progress.ended == N_QUICK
        assert progress.done is False
        assert isinstance(progress.started_at, datetime)
        assert progress.rate > 0, "some children ended: the rate is positive"
        assert progress.eta is not None and progress.eta > 0, "children remain: the ETA is positive"
        assert sum(_progress_counts(progress).values()) == progress.total
        # the same on a second read (nothing moves while the children are held)
        assert _progress_counts(app.get_run(parent.id).progress) == _progress_counts(progress)

        # wake the waiters: they complete, freeing no slot (they held none)
        app.send("progress.go", {"key": "k"})
        expected = {"queued": N_BLOCK - SLOTS, "running": SLOTS, "waiting": 0, "completed": N_QUICK + N_WAIT}
        wait_until(
            steady,
            timeout=20,
            message=lambda: f"children {dict(_children_by_status(app, parent.id, 'held-child'))} to be {expected}",
        )
        actual = _children_by_status(app, parent.id, "held-child")
        assert _progress_counts(app.get_run(parent.id).progress) == {s: actual[s] for s in STATUSES}
    finally:
        gate.set()

    def parent_completed():
        run = app.get_run(parent.id)
        return run.status == "completed" and run

    done = wait_until(parent_completed, timeout=30, message=lambda: f"the parent to complete: {app.get_run(parent.id)}")
    assert done.output == list(range(N))
    final = done.progress
    assert final.total == N
    assert final.completed == N
    assert final.ended == N
    assert final.done is True
    assert final.queued == final.running == final.waiting == final.failed == final.cancelled == 0
    assert final.rate > 0
    assert final.eta is None or final.eta == 0
    assert sorted(tally.values("started")) == [n for n in range(N) if not N_QUICK <= n < N_QUICK + N_WAIT]


def test_progress_counts_failed_and_cancelled_children(app, tally) -> None:
    @app.function(retries=0)
    def ends_somehow(ctx):
        kind = ctx.event.data["kind"]
        if kind == "sleep":
            ctx.step.sleep("long", timedelta(hours=1))

        def work():
            if kind == "fail":
                raise conveyor.NonRetriableError("no")
            return kind

        return ctx.step.run("work", work)

    @app.function(on="progress.mixed", retries=0)
    def mixed_parent(ctx):
        kinds = ["ok"] * 5 + ["fail"] * 2 + ["sleep"] * 3
        results = ctx.step.map("fan", ends_somehow, [{"kind": k} for k in kinds], allow_failures=True)
        return list(results)

    event_id = app.send("progress.mixed")
    app.drain(timeout=20)
    (parent,) = app.runs_for_event(event_id)
    progress = app.get_run(parent.id).progress
    assert _progress_counts(progress) == {
        "queued": 0, "running": 0, "waiting": 3, "completed": 5, "failed": 2, "cancelled": 0
    }, progress
    assert progress.total == 10
    assert progress.done is False
    sleepers = [c for c in app.list_runs(function="ends-somehow", status="waiting", limit=100)]
    assert len(sleepers) == 3
    for child in sleepers:
        app.cancel_run(child.id)
    app.drain(timeout=20)

    final = app.get_run(parent.id)
    assert final.status == "completed", final
    assert final.output == ["ok"] * 5 + [None] * 5
    assert _progress_counts(final.progress) == {
        "queued": 0, "running": 0, "waiting": 0, "completed": 5, "failed": 2, "cancelled": 3
    }, final.progress
    assert final.progress.ended == 10
    assert final.progress.done is True
    assert final.progress.eta is None or final.progress.eta == 0


def test_progress_is_none_without_children(app) -> None:
    @app.function(on="progress.none")
    def lonely(ctx):
        return ctx.step.run("one", lambda: 1)

    event_id = app.send("progress.none")
    app.drain(timeout=10)
    (run,) = app.runs_for_event(event_id)
    assert app.get_run(run.id).progress is None
