"""Durable sleep: the run suspends (status ``waiting``, no worker held) and resumes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from .helpers import only_run, step


def test_sleep_suspends_and_resumes(app, tally) -> None:
    @app.function(on="sleep.short")
    def napper(ctx):
        before = ctx.step.run("before", lambda: tally.hit("before") and time.time())
        ctx.step.sleep("s", 0.2)
        after = ctx.step.run("after", lambda: tally.hit("after") and time.time())
        return after - before

    event_id = app.send("sleep.short")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output >= 0.2, f"woke after {run.output:.3f}s, slept for 0.2s"
    assert (tally["before"], tally["after"]) == (1, 1)
    nap = step(run, "s")
    assert nap.kind == "sleep"
    assert nap.status == "completed"
    assert [s.id for s in run.steps] == ["before", "s", "after"]


def test_sleep_accepts_timedelta(app) -> None:
    @app.function(on="sleep.td")
    async def async_napper(ctx):
        start = await ctx.step.run("start", time.time)
        await ctx.step.sleep("td", timedelta(milliseconds=150))
        return (await ctx.step.run("end", time.time)) - start

    event_id = app.send("sleep.td")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output >= 0.15
    assert step(run, "td").status == "completed"


def test_sleep_until(app) -> None:
    @app.function(on="sleep.until")
    def until(ctx):
        wake = ctx.step.run(
            "pick-wake-time",
            lambda: (datetime.now(UTC) + timedelta(seconds=0.3)).timestamp(),
        )
        ctx.step.sleep_until("until", datetime.fromtimestamp(wake, tz=UTC))
        return ctx.step.run("woke", time.time) - wake

    event_id = app.send("sleep.until")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output >= 0, f"woke {-run.output:.3f}s before the requested time"
    assert step(run, "until").status == "completed"


def test_sleep_until_past_time_continues_at_once(app) -> None:
    @app.function(on="sleep.past")
    def past(ctx):
        ctx.step.sleep_until("past", datetime(2000, 1, 1, tzinfo=UTC))
        return "done"

    event_id = app.send("sleep.past")
    app.drain(timeout=10)
    run = only_run(app, event_id)
    assert (run.status, run.output) == ("completed", "done")


def test_sleeping_run_is_waiting_and_holds_no_worker(app, tally, start_worker, wait_until) -> None:
    """With one worker slot, another run completes while the first one sleeps."""

    @app.function(on="sleep.long")
    def long_sleeper(ctx):
        ctx.step.run("before", lambda: tally.hit("before"))
        ctx.step.sleep("long-nap", 1.5)
        return ctx.step.run("after", lambda: tally.hit("after", time.time()) and "woke")

    @app.function(on="sleep.quick")
    def quick(ctx):
        return ctx.step.run("work", lambda: tally.hit("quick", time.time()) and "quick")

    start_worker(app, concurrency=1)
    sleeper = app.send("sleep.long")
    wait_until(lambda: app.runs_for_event(sleeper), message="the sleeper's run to exist")
    sleeper_run = only_run(app, sleeper).id
    wait_until(
        lambda: app.get_run(sleeper_run).status == "waiting",
        message=lambda: f"sleeper to be waiting, is {app.get_run(sleeper_run).status}",
    )
    record = step(app.get_run(sleeper_run), "long-nap")
    assert record.kind == "sleep"
    assert record.status != "completed"

    quick_event = app.send("sleep.quick")
    wait_until(
        lambda: app.runs_for_event(quick_event) and only_run(app, quick_event).status == "completed",
        timeout=10,
        message="the quick run to complete while the other run sleeps",
    )
    assert tally["after"] == 0, "the quick run only ran after the sleeper woke up"
    assert app.get_run(sleeper_run).status == "waiting"

    wait_until(lambda: app.get_run(sleeper_run).status == "completed", timeout=15)
    done = app.get_run(sleeper_run)
    assert done.output == "woke"
    assert step(done, "long-nap").status == "completed"
    (quick_at,) = tally.values("quick")
    (woke_at,) = tally.values("after")
    assert quick_at < woke_at
