"""invoke and map: a parent suspends on child runs and gets their outputs (or a StepError)."""

from __future__ import annotations

from conveyor import StepError

from .helpers import error_text, only_run, step


def test_parent_gets_child_output(app, tally) -> None:
    @app.function()
    def square(ctx):
        tally.hit("child")
        return ctx.step.run("square", lambda: ctx.event.data["n"] ** 2)

    @app.function(on="invoke.parent")
    def parent(ctx):
        tally.hit("parent")
        before = ctx.step.run("before", lambda: tally.hit("before") and "x")
        squared = ctx.step.invoke("call-square", square, {"n": ctx.event.data["n"]})
        return {"before": before, "squared": squared}

    event_id = app.send("invoke.parent", {"n": 7})
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == {"before": "x", "squared": 49}
    assert tally["before"] == 1
    assert tally["child"] == 1
    record = step(run, "call-square")
    assert record.kind == "invoke"
    assert record.status == "completed"
    assert record.output == 49
    children = [r for r in app.list_runs(function="square")]
    assert len(children) == 1
    assert children[0].status == "completed"
    assert children[0].parent_id == run.id


def test_async_parent_invokes(app) -> None:
    @app.function()
    async def doubler(ctx):
        return ctx.event.data["n"] * 2

    @app.function(on="invoke.async")
    async def async_parent(ctx):
        return await ctx.step.invoke("double", doubler, {"n": 21})

    event_id = app.send("invoke.async")
    app.drain(timeout=20)
    assert only_run(app, event_id).output == 42


def test_child_failure_raises_step_error_in_parent(app, tally) -> None:
    @app.function(retries=0)
    def failing_child(ctx):
        ctx.step.run("explode", lambda: int("child exploded"))

    @app.function(on="invoke.fails", retries=0)
    def catching_parent(ctx):
        try:
            ctx.step.invoke("call-child", failing_child, {})
        except StepError as err:
            tally.hit("caught", err)
            return {"caught": err.message, "step": err.step_id}
        return "no error"

    event_id = app.send("invoke.fails")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert "child exploded" in run.output["caught"]
    assert run.output["step"] == "call-child"
    (child,) = app.list_runs(function="failing-child")
    assert child.status == "failed"
    assert step(run, "call-child").status == "failed"


def test_uncaught_child_failure_fails_parent(app) -> None:
    @app.function(retries=0)
    def bad_child(ctx):
        raise ValueError("child says no")

    @app.function(on="invoke.uncaught", retries=0)
    def strict_parent(ctx):
        return ctx.step.invoke("call", bad_child, {})

    event_id = app.send("invoke.uncaught")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed"
    assert "child says no" in error_text(run)
    assert run.id in {r.id for r in app.dead_letters()}


def test_map_fans_out_and_gathers_in_order(app, tally) -> None:
    @app.function()
    def cube(ctx):
        tally.hit("child")
        return ctx.event.data["n"] ** 3

    @app.function(on="map.start")
    def fan_out(ctx):
        items = [{"n": n} for n in range(6)]
        results = ctx.step.map("cubes", cube, items)
        summary = ctx.step.run(
            "reduce",
            lambda res: {"len": len(res), "first": res[0], "all": list(res)},
            results,
        )
        tally.hit("reduce-seen")
        return summary

    event_id = app.send("map.start")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == {"len": 6, "first": 0, "all": [0, 1, 8, 27, 64, 125]}
    assert tally["child"] == 6
    children = app.list_runs(function="cube")
    assert len(children) == 6
    assert {c.parent_id for c in children} == {run.id}
    assert run.progress is not None
    assert run.progress.total == 6
    assert run.progress.completed == 6
    assert step(run, "cubes").kind == "map"
