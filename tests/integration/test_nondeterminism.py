"""A replay that does not follow the memo fails the run with a clear error."""

from __future__ import annotations

import itertools

from .helpers import error_text, only_run


def _mentions_nondeterminism(run) -> bool:
    text = error_text(run)
    return "determinis" in text  # "non-determinism", "NonDeterminismError", "nondeterministic"


def test_step_ids_changing_between_invocations_fail_the_run(app, tally) -> None:
    counter = itertools.count()

    @app.function(on="nd.ids", retries=0)
    def unstable(ctx):
        n = next(counter)  # differs on every invocation: not deterministic
        ctx.step.run(f"fetch-{n}", lambda: tally.hit("fetch") and n)
        ctx.step.sleep("nap", 0.01)  # ends the invocation; the replay sees another id
        return ctx.step.run("done", lambda: tally.hit("done") and "done")

    event_id = app.send("nd.ids")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert _mentions_nondeterminism(run), run.error
    assert tally["done"] == 0
    assert tally["fetch"] == 1, "the diverged replay ran a new step body"


def test_step_kind_changing_between_invocations_fails_the_run(app, tally) -> None:
    invocations = itertools.count()

    @app.function(on="nd.kind", retries=0)
    def kind_flip(ctx):
        if next(invocations) == 0:
            ctx.step.run("x", lambda: tally.hit("x") and 1)
        else:
            ctx.step.sleep("x", 0.01)  # same id, different kind on replay
        ctx.step.sleep("nap", 0.01)
        return ctx.step.run("done", lambda: tally.hit("done") and "done")

    event_id = app.send("nd.kind")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert _mentions_nondeterminism(run) or "kind" in error_text(run), run.error
    assert "x" in error_text(run), "the error must name the step"
    assert tally["done"] == 0


def test_same_id_for_two_kinds_in_one_run_is_not_confused(app, tally) -> None:
    """``run("x")`` then ``sleep("x")``: a clear error, or two distinct step records;
    never the run step's memoized output handed back as the sleep's."""

    @app.function(on="nd.same-id", retries=0)
    def same_id(ctx):
        ctx.step.run("x", lambda: tally.hit("x") and "run output")
        ctx.step.sleep("x", 0.01)
        return ctx.step.run("done", lambda: "done")

    event_id = app.send("nd.same-id")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert tally["x"] == 1
    if run.status == "failed":
        assert "x" in error_text(run)
        assert (
            _mentions_nondeterminism(run)
            or "kind" in error_text(run)
            or "unique" in (error_text(run))
            or "already" in error_text(run)
        ), run.error
    else:
        assert run.status == "completed", run
        kinds = sorted(s.kind for s in run.steps)
        assert kinds == ["run", "run", "sleep"], run.steps
        assert len({s.id for s in run.steps}) == 3
