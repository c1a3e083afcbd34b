"""A step's result is memoized: a replay never runs a finished step's body again."""

from __future__ import annotations

import pytest

from .helpers import only_run, step, step_ids


def _register_three_steps(app, tally, flavour: str):
    def one(x: int) -> int:
        tally.hit("one")
        return x + 1

    def two(x: int) -> int:
        if tally.hit("two") == 1:
            raise RuntimeError("transient failure of step two")
        return x * 10

    def three(x: int) -> dict:
        tally.hit("three")
        return {"result": x}

    if flavour == "sync":

        @app.function(on="memo.start", retries=2)
        def three_steps(ctx):
            tally.hit("invocation")
            a = ctx.step.run("one", one, ctx.event.data["x"])
            b = ctx.step.run("two", two, a)
            return ctx.step.run("three", three, b)

    else:

        @app.function(on="memo.start", retries=2)
        async def three_steps(ctx):
            tally.hit("invocation")
            a = await ctx.step.run("one", one, ctx.event.data["x"])
            b = await ctx.step.run("two", two, a)
            return await ctx.step.run("three", three, b)

    return three_steps


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_failed_step_retries_without_rerunning_earlier_steps(app, tally, flavour) -> None:
    _register_three_steps(app, tally, flavour)
    event_id = app.send("memo.start", {"x": 4})
    app.drain(timeout=20)

    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == {"result": 50}
    assert tally["one"] == 1, "step one's body ran again on replay"
    assert tally["two"] == 2
    assert tally["three"] == 1
    # the function itself was replayed (at least once for the retry)
    assert tally["invocation"] >= 2
    assert step_ids(run) == ["one", "two", "three"]
    assert [s.kind for s in run.steps] == ["run", "run", "run"]
    assert [s.status for s in run.steps] == ["completed"] * 3
    assert [s.attempts for s in run.steps] == [1, 2, 1]
    assert step(run, "one").output == 5
    assert step(run, "two").output == 50
    assert step(run, "three").output == {"result": 50}


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_invoke_handle_gives_output(app, tally, flavour) -> None:
    fn = _register_three_steps(app, tally, flavour)
    handle = fn.invoke({"x": 1})
    app.drain(timeout=20)
    assert handle.status() == "completed"
    assert handle.result(timeout=5) == {"result": 20}
    assert app.get_run(handle.id).function_id == "three-steps"


def test_ctx_attempt_counts_attempts_of_the_current_step(app, tally) -> None:
    @app.function(on="memo.attempt", retries=3)
    def attempts(ctx):
        def flaky():
            n = tally.hit("flaky", ctx.attempt)
            if n < 3:
                raise RuntimeError(f"fail {n}")
            return ctx.attempt

        first = ctx.step.run("first", lambda: ctx.attempt)
        return [first, ctx.step.run("flaky", flaky)]

    event_id = app.send("memo.attempt")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert tally.values("flaky") == [0, 1, 2]
    assert run.output == [0, 2]


def test_repeated_step_id_in_a_loop_gets_distinct_records(app, tally) -> None:
    @app.function(on="memo.loop")
    def looped(ctx):
        out = []
        for i in range(3):
            out.append(ctx.step.run("item", lambda i=i: tally.hit("item") and i * 2))
        ctx.step.sleep("pause", 0.01)  # forces a replay through the loop
        return out

    event_id = app.send("memo.loop")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == [0, 2, 4]
    assert tally["item"] == 3, "a looped step ran again on replay"
    run_steps = [s for s in run.steps if s.kind == "run"]
    assert len(run_steps) == 3
    assert len({s.id for s in run_steps}) == 3, "looped step ids must be made unique"
    assert [s.output for s in run_steps] == [0, 2, 4]


def test_step_args_and_kwargs_are_passed(app) -> None:
    @app.function(on="memo.args")
    def with_args(ctx):
        return ctx.step.run("join", lambda a, b, *, sep: sep.join([a, b]), "x", "y", sep="-")

    event_id = app.send("memo.args")
    app.drain(timeout=10)
    assert only_run(app, event_id).output == "x-y"


def test_code_between_steps_reruns_but_step_bodies_do_not(app, tally) -> None:
    @app.function(on="memo.between")
    def between(ctx):
        tally.hit("between")
        value = ctx.step.run("value", lambda: tally.hit("body") * 7)
        ctx.step.sleep("nap", 0.01)
        ctx.step.sleep("nap-2", 0.01)
        return value

    event_id = app.send("memo.between")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == 7
    assert tally["body"] == 1
    assert tally["between"] >= 3, "each sleep must end the invocation; the function replays"


def test_a_step_is_committed_before_the_next_step_body_runs(app, tally, start_worker, wait_until):
    """Each step's checkpoint is durable before the function goes on: a crash then
    repeats at most the step in flight, never an earlier, finished one."""

    @app.function(on="memo.durable")
    def durable(ctx):
        ctx.step.run("one", lambda: 1)

        def two():
            committed = {s.id: s.status for s in app.get_run(ctx.run_id).steps}
            tally.hit("seen", committed.get("one"))
            return 2

        ctx.step.run("two", two)
        ctx.step.run("three", lambda: 3)
        return "ok"

    start_worker(app, concurrency=4)
    ids = [app.send("memo.durable") for _ in range(40)]
    wait_until(
        lambda: len(app.list_runs(function="durable", status="completed", limit=1000)) == 40,
        timeout=60,
    )
    assert tally.values("seen") == ["completed"] * 40
    for event_id in ids:
        assert [s.status for s in only_run(app, event_id).steps] == ["completed"] * 3
