"""ctx.step.send_event sends its event exactly once, whatever happens after it."""

from __future__ import annotations

import threading

from .helpers import only_run, step


def _register(app, tally, *, later_fails_for_good: bool):
    fail_once = threading.Lock()

    @app.function(on="sender.start", retries=2)
    def sender(ctx):
        ctx.step.send_event("announce", "sender.announced", {"from": ctx.run_id})

        def later():
            n = tally.hit("later")
            if later_fails_for_good or (n == 1 and fail_once.acquire(blocking=False)):
                raise RuntimeError(f"later step failed #{n}")
            return "ok"

        return ctx.step.run("later", later)

    @app.function(on="sender.announced")
    def listener(ctx):
        tally.hit("listener", ctx.event.data["from"])
        return ctx.event.data

    return sender


def test_send_event_step_sends_once_across_replays(app, tally) -> None:
    _register(app, tally, later_fails_for_good=False)
    event_id = app.send("sender.start")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert tally["later"] == 2  # the function was replayed for the retry
    listener_runs = app.list_runs(function="listener")
    assert len(listener_runs) == 1, f"event sent {len(listener_runs)} times"
    assert listener_runs[0].status == "completed"
    assert listener_runs[0].output == {"from": run.id}
    assert tally.values("listener") == [run.id]
    record = step(run, "announce")
    assert record.kind == "send_event"
    assert record.status == "completed"


def test_send_event_step_sends_once_when_run_fails(app, tally) -> None:
    _register(app, tally, later_fails_for_good=True)
    event_id = app.send("sender.start")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert tally["later"] == 3
    assert len(app.list_runs(function="listener")) == 1
    # a redrive replays the function again: still one event
    app.redrive([run.id])
    app.drain(timeout=20)
    assert tally["later"] == 6
    assert len(app.list_runs(function="listener")) == 1
    assert tally["listener"] == 1
