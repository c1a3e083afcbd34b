"""Bad input gets a clear error and loses nothing else."""

from __future__ import annotations

import pytest

import conveyor

from .helpers import error_text, only_run, step


def test_non_serializable_step_output_fails_after_one_attempt(app, tally) -> None:
    @app.function(on="bad.step-output", retries=3)
    def returns_object(ctx):
        ctx.step.run("fine", lambda: "fine")
        return ctx.step.run("make-object", lambda: tally.hit("attempt") and object())

    event_id = app.send("bad.step-output")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert tally["attempt"] == 1, "a non-serializable output is not worth retrying"
    text = error_text(run)
    assert "serializ" in text or "json" in text, run.error
    record = step(run, "make-object")
    assert record.status == "failed"
    assert record.attempts == 1
    assert step(run, "fine").status == "completed"


def test_non_serializable_function_output_fails_the_run(app) -> None:
    @app.function(on="bad.fn-output", retries=2)
    def returns_set(ctx):
        return {1, 2, 3}

    event_id = app.send("bad.fn-output")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    text = error_text(run)
    assert "serializ" in text or "json" in text, run.error


def test_other_runs_unaffected_by_a_bad_one(app) -> None:
    @app.function(on="bad.mixed", retries=0)
    def sometimes_bad(ctx):
        if ctx.event.data["bad"]:
            return ctx.step.run("out", object)
        return ctx.step.run("out", lambda: "good")

    bad = app.send("bad.mixed", {"bad": True})
    good = app.send("bad.mixed", {"bad": False})
    app.drain(timeout=20)
    assert only_run(app, bad).status == "failed"
    assert only_run(app, good).output == "good"


def test_send_with_non_string_name(app) -> None:
    with pytest.raises(conveyor.ConveyorError) as info:
        app.send(42)  # type: ignore[arg-type]
    assert info.value.message


def test_unknown_function_by_id(app) -> None:
    @app.function(on="bad.unknown-invoke", retries=0)
    def invoke_unknown(ctx):
        return ctx.step.invoke("call", "does-not-exist", {})

    event_id = app.send("bad.unknown-invoke")
    app.drain(timeout=10)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert "does-not-exist" in error_text(run)


def test_bad_database_url_is_a_config_error(tmp_path) -> None:
    with pytest.raises(conveyor.ConfigError):
        app = conveyor.Conveyor("bad", database="mysql://nope")
        app.send("x")  # in case the URL is only checked on first use


def test_bad_retries_option_is_refused(app) -> None:
    with pytest.raises((conveyor.ConveyorError, ValueError, TypeError)):

        @app.function(on="bad.opts", retries=-1)
        def negative(ctx):
            return None


def test_a_step_output_nested_too_deeply_fails_the_step_clearly(app) -> None:
    @app.function(on="deep.output", retries=3)
    def deep(ctx):
        def build() -> list:
            value: list = []
            for _ in range(150):
                value = [value]
            return value

        return ctx.step.run("build", build)

    event_id = app.send("deep.output")
    app.drain(timeout=20)
    [run] = app.runs_for_event(event_id)
    run = app.get_run(run.id)
    assert run.status == "failed"
    [step] = run.steps
    assert step.status == "failed" and step.attempts == 1  # not retried: it would fail again
    assert "more than 100 levels" in step.error["message"]
