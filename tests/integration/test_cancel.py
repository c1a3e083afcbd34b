"""Cancelling a run: it ends as ``cancelled`` and never resumes."""

from __future__ import annotations

import pytest

import conveyor

from .helpers import only_run


def test_cancel_sleeping_run_never_resumes(app, tally, start_worker, wait_until) -> None:
    @app.function(on="cancel.sleeper")
    def sleeper(ctx):
        ctx.step.run("before", lambda: tally.hit("before"))
        ctx.step.sleep("nap", ctx.event.data["nap"])
        return ctx.step.run("after", lambda: tally.hit("after") and "resumed")

    start_worker(app, concurrency=2)
    victim_event = app.send("cancel.sleeper", {"nap": 1.0})
    wait_until(lambda: app.runs_for_event(victim_event))
    victim = only_run(app, victim_event).id
    wait_until(lambda: app.get_run(victim).status == "waiting", message="the victim to sleep")

    app.cancel_run(victim)
    assert app.get_run(victim).status == "cancelled"

    # A sentinel that sleeps past the victim's wake time: once it completes, the
    # worker has been draining well after the victim would have woken up.
    sentinel_event = app.send("cancel.sleeper", {"nap": 1.5})
    wait_until(
        lambda: app.runs_for_event(sentinel_event) and only_run(app, sentinel_event).status == "completed",
        timeout=15,
        message="the sentinel run to complete",
    )
    assert tally["before"] == 2
    assert tally["after"] == 1, "the cancelled run resumed after its sleep"
    run = app.get_run(victim)
    assert run.status == "cancelled"
    assert "after" not in [s.id for s in run.steps]
    assert run.id not in {r.id for r in app.dead_letters()}


def test_cancel_queued_run_never_starts(app, tally) -> None:
    @app.function()
    def never(ctx):
        tally.hit("ran")

    handle = never.invoke({})
    assert handle.status() == "queued"
    app.cancel_run(handle.id)
    app.drain(timeout=2)
    assert tally["ran"] == 0
    assert handle.status() == "cancelled"


def test_cancel_unknown_run_is_not_found(app) -> None:
    with pytest.raises(conveyor.NotFound):
        app.cancel_run("no-such-run")


def test_handle_result_of_cancelled_run_raises(app, wait_until) -> None:
    @app.function()
    def long_nap(ctx):
        ctx.step.sleep("nap", 3600)

    handle = long_nap.invoke({})
    app.drain(timeout=2)
    assert handle.status() == "waiting"
    app.cancel_run(handle.id)
    assert handle.status() == "cancelled"
    with pytest.raises(conveyor.RunFailed):
        handle.result(timeout=5)
