"""A run that fails for good calls on_failure once, becomes a dead letter, and can be
redriven or replayed from the failed step, keeping its memoized steps."""

from __future__ import annotations

import threading

import pytest

import conveyor
from conveyor import StepError

from .helpers import only_run, step


class Switch:
    """A flag flipped by the test to make a failing step succeed on the next attempt."""

    def __init__(self) -> None:
        self._on = threading.Event()

    def turn_on(self) -> None:
        self._on.set()

    def __bool__(self) -> bool:
        return self._on.is_set()


def _register_fixable(app, tally, fixed: Switch, *, with_handler: bool = False):
    @app.function(on="dlq.fixable", retries=1)
    def fixable(ctx):
        a = ctx.step.run("prepare", lambda: tally.hit("prepare") * 100)

        def flaky():
            tally.hit("flaky")
            if not fixed:
                raise ConnectionError("upstream is down")
            return a + 1

        b = ctx.step.run("flaky", flaky)
        return ctx.step.run("finish", lambda: tally.hit("finish") and {"value": b})

    if with_handler:

        @fixable.on_failure
        def on_fixable_failed(ctx, error):
            tally.hit("on_failure", error)

    return fixable


def test_on_failure_runs_once_with_step_error(app, tally) -> None:
    _register_fixable(app, tally, Switch(), with_handler=True)
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    app.drain(timeout=2)  # anything left (the handler's own job, if it has one)
    assert tally["on_failure"] == 1, "on_failure must run exactly once per failure"
    app.drain(timeout=1)
    assert tally["on_failure"] == 1, "on_failure ran again"
    (error,) = tally.values("on_failure")
    assert isinstance(error, StepError)
    assert error.step_id == "flaky"
    assert "ConnectionError" in error.error_type
    assert "upstream is down" in error.message


def test_on_failure_async_handler(app, tally) -> None:
    @app.function(on="dlq.async", retries=0)
    async def async_fails(ctx):
        await ctx.step.run("nope", lambda: 1 / 0)

    @async_fails.on_failure
    async def handler(ctx, error):
        tally.hit("handled", (error.step_id, error.error_type))

    app.send("dlq.async")
    app.drain(timeout=20)
    app.drain(timeout=1)
    assert tally["handled"] == 1
    ((step_id, error_type),) = tally.values("handled")
    assert step_id == "nope"
    assert "ZeroDivisionError" in error_type


def test_on_failure_not_called_for_completed_run(app, tally) -> None:
    fixed = Switch()
    fixed.turn_on()
    _register_fixable(app, tally, fixed, with_handler=True)
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    assert only_run(app, event_id).status == "completed"
    assert tally["on_failure"] == 0


def test_failed_run_is_a_dead_letter_and_completed_is_not(app, tally) -> None:
    _register_fixable(app, tally, Switch())

    @app.function(on="dlq.fine")
    def fine(ctx):
        return "ok"

    bad = app.send("dlq.fixable")
    good = app.send("dlq.fine")
    app.drain(timeout=20)
    bad_run, good_run = only_run(app, bad), only_run(app, good)
    dead = {r.id for r in app.dead_letters()}
    assert bad_run.id in dead
    assert good_run.id not in dead
    assert [r.status for r in app.dead_letters()] == ["failed"] * len(dead)


def test_redrive_reruns_from_failed_step_keeping_memo(app, tally) -> None:
    fixed = Switch()
    _register_fixable(app, tally, fixed, with_handler=True)
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert (tally["prepare"], tally["flaky"], tally["finish"]) == (1, 2, 0)

    fixed.turn_on()
    redriven = app.redrive([run.id])
    assert run.id in list(redriven)
    assert app.get_run(run.id).status == "queued"
    assert run.id not in {r.id for r in app.dead_letters()}

    app.drain(timeout=20)
    after = app.get_run(run.id)
    assert after.status == "completed", after
    assert after.output == {"value": 101}
    assert tally["prepare"] == 1, "redrive re-ran a memoized step"
    assert tally["flaky"] == 3
    assert tally["finish"] == 1
    assert step(after, "prepare").output == 100
    assert step(after, "flaky").status == "completed"
    assert run.id not in {r.id for r in app.dead_letters()}
    assert [r.id for r in app.runs_for_event(event_id)] == [run.id], "redrive made a new run"
    assert tally["on_failure"] == 1


def test_redrive_all(app, tally) -> None:
    fixed = Switch()
    _register_fixable(app, tally, fixed)
    events = [app.send("dlq.fixable") for _ in range(3)]
    app.drain(timeout=20)
    ids = {only_run(app, e).id for e in events}
    assert ids <= {r.id for r in app.dead_letters()}

    fixed.turn_on()
    assert ids <= set(app.redrive())
    app.drain(timeout=20)
    assert all(app.get_run(i).status == "completed" for i in ids)
    assert app.dead_letters() == []
    assert tally["prepare"] == 3


def test_redrive_with_a_bad_id_redrives_none(app, tally) -> None:
    _register_fixable(app, tally, Switch())
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    dead = only_run(app, event_id)
    with pytest.raises(conveyor.NotFound):
        app.redrive([dead.id, "no-such-run"])
    assert app.get_run(dead.id).status == "failed"  # not half done: the good id was not redriven either
    assert [r.id for r in app.dead_letters()] == [dead.id]


def test_replay_failed_run_continues_same_run(app, tally) -> None:
    fixed = Switch()
    _register_fixable(app, tally, fixed)
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"

    fixed.turn_on()
    app.replay_run(run.id)
    assert app.get_run(run.id).status == "queued"
    app.drain(timeout=20)
    after = app.get_run(run.id)
    assert after.status == "completed", after
    assert after.output == {"value": 101}
    assert tally["prepare"] == 1
    assert [r.id for r in app.runs_for_event(event_id)] == [run.id]
    with pytest.raises(conveyor.InvalidState, match="only failed, cancelled runs"):
        app.replay_run(run.id)  # completed: nothing failed to re-run (the HTTP API says the same)
    assert app.get_run(run.id).status == "completed"


def test_failure_after_redrive_calls_on_failure_again(app, tally) -> None:
    _register_fixable(app, tally, Switch(), with_handler=True)
    event_id = app.send("dlq.fixable")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    app.drain(timeout=1)
    assert tally["on_failure"] == 1
    app.redrive([run.id])
    app.drain(timeout=20)
    app.drain(timeout=1)
    assert app.get_run(run.id).status == "failed"
    assert tally["on_failure"] == 2, "one on_failure call per failure"
    assert tally["prepare"] == 1


def test_cancel_or_redrive_of_a_completed_run_changes_nothing(app) -> None:
    @app.function(on="dlq.done")
    def done(ctx):
        return {"done": True}

    event_id = app.send("dlq.done")
    app.drain(timeout=10)
    run = only_run(app, event_id)
    assert run.status == "completed"
    with pytest.raises(conveyor.InvalidState):
        app.cancel_run(run.id)
    try:
        redriven = list(app.redrive([run.id]))
    except conveyor.InvalidState:
        redriven = []
    assert run.id not in redriven
    after = app.get_run(run.id)
    assert (after.status, after.output) == ("completed", {"done": True})
