"""Retries: ``retries=N`` is N+1 attempts; NonRetriableError and RetryAfterError steer them."""

from __future__ import annotations

import time

import pytest

import conveyor
from conveyor import NonRetriableError, RetryAfterError, StepError

from .helpers import error_text, only_run, step


def test_always_failing_step_runs_retries_plus_one_times(app, tally) -> None:
    @app.function(on="retry.always", retries=2)
    def always_fails(ctx):
        def boom():
            n = tally.hit("boom")
            raise ValueError(f"disk on fire #{n}")

        ctx.step.run("boom", boom)
        tally.hit("after")  # never reached
        return "unreachable"

    event_id = app.send("retry.always")
    app.drain(timeout=20)

    run = only_run(app, event_id)
    assert tally["boom"] == 3
    assert tally["after"] == 0
    assert run.status == "failed"
    record = step(run, "boom")
    assert record.status == "failed"
    assert record.attempts == 3
    assert record.error is not None
    assert "disk on fire #3" in str(record.error.get("message"))
    assert run.error is not None
    assert run.error.get("step_id") == "boom"
    assert run.error.get("type") == "ValueError" or "ValueError" in str(run.error.get("type"))
    assert "disk on fire #3" in str(run.error.get("message"))

    # more draining does not bring it back
    app.drain(timeout=1)
    assert tally["boom"] == 3


def test_result_of_failed_run_raises_runfailed_with_original_message(app) -> None:
    def explode():
        raise LookupError("the original message")

    @app.function(retries=1)
    def doomed(ctx):
        ctx.step.run("explode", explode)

    handle = doomed.invoke({})
    app.drain(timeout=20)
    assert handle.status() == "failed"
    with pytest.raises(conveyor.RunFailed) as info:
        handle.result(timeout=5)
    assert "the original message" in str(info.value)


@pytest.mark.parametrize("retries", [0, 1, 4])
def test_retries_bound_attempts(app, tally, retries) -> None:
    @app.function(on="retry.bound", retries=retries)
    def bounded(ctx):
        ctx.step.run("fail", lambda: tally.hit("fail") and 1 / 0)

    event_id = app.send("retry.bound")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert tally["fail"] == retries + 1
    assert step(run, "fail").attempts == retries + 1


def test_non_retriable_error_stops_at_once(app, tally) -> None:
    @app.function(on="retry.nonretriable", retries=5)
    def refuses(ctx):
        def bad_input():
            tally.hit("attempt")
            raise NonRetriableError("input is hopeless")

        ctx.step.run("validate", bad_input)

    event_id = app.send("retry.nonretriable")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert tally["attempt"] == 1
    assert run.status == "failed"
    assert step(run, "validate").status == "failed"
    assert step(run, "validate").attempts == 1
    assert "input is hopeless" in error_text(run)


def test_retry_after_delays_next_attempt(app, tally) -> None:
    after = 0.4

    @app.function(on="retry.after", retries=2)
    def rate_limited(ctx):
        def call_api():
            n = tally.hit("attempt", time.time())
            if n == 1:
                raise RetryAfterError("429 too many requests", after=after)
            return "ok"

        return ctx.step.run("call-api", call_api)

    event_id = app.send("retry.after")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == "ok"
    first, second = tally.values("attempt")
    assert second - first >= after, f"retried after {second - first:.3f}s, wanted >= {after}s"
    assert step(run, "call-api").attempts == 2


def test_retry_after_counts_as_an_attempt(app, tally) -> None:
    @app.function(on="retry.after.count", retries=1)
    def always_later(ctx):
        def call():
            tally.hit("attempt")
            raise RetryAfterError("still busy", after=0.01)

        ctx.step.run("call", call)

    event_id = app.send("retry.after.count")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert tally["attempt"] == 2
    assert "still busy" in error_text(run)


def test_caught_step_error_lets_the_run_complete(app, tally) -> None:
    @app.function(on="retry.caught", retries=1)
    def tolerant(ctx):
        try:
            ctx.step.run("flaky", lambda: tally.hit("flaky") and int("not a number"))
        except StepError as err:
            tally.hit("caught", (err.step_id, err.error_type, err.message))
            recovered = f"fallback after {err.step_id}"
        ctx.step.sleep("nap", 0.01)  # replay: the failure must come from the memo
        return ctx.step.run("finish", lambda: recovered)

    event_id = app.send("retry.caught")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == "fallback after flaky"
    assert tally["flaky"] == 2, "a failed step's body ran again on replay"
    caught = tally.values("caught")
    assert len(caught) >= 2  # once when it failed, once more on the replay after the sleep
    assert all(c == caught[0] for c in caught), "the memoized StepError changed on replay"
    step_id, error_type, message = caught[0]
    assert step_id == "flaky"
    assert "ValueError" in error_type
    assert "not a number" in message
    assert step(run, "flaky").status == "failed"
    assert step(run, "finish").status == "completed"


def test_function_level_exception_fails_the_run(app) -> None:
    @app.function(on="retry.fn-raises", retries=0)
    def raises_between_steps(ctx):
        ctx.step.run("ok", lambda: 1)
        raise RuntimeError("raised outside any step")

    event_id = app.send("retry.fn-raises")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert "raised outside any step" in error_text(run)
    assert step(run, "ok").status == "completed"


def test_backoff_on_function_overrides_app(make_app, tally) -> None:
    app = make_app(backoff=conveyor.Backoff(base=600, cap=600))  # app default: very slow

    @app.function(on="retry.fn-backoff", retries=2, backoff=conveyor.Backoff(base=0.01, cap=0.05))
    def quick(ctx):
        ctx.step.run("fail", lambda: tally.hit("fail") and 1 / 0)

    event_id = app.send("retry.fn-backoff")
    app.drain(timeout=20)
    assert tally["fail"] == 3
    assert only_run(app, event_id).status == "failed"
