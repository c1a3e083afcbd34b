"""The functions the push tests run at their endpoints. Every step body counts its executions
in a :class:`~tests.conftest.Tally` (the endpoint runs in the test process) and returns the
count: a step's committed output says which execution was committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import Tally

from conveyor import Context, Conveyor, NonRetriableError, StepError


def define(app: Conveyor, tally: Tally) -> None:
    def hit(name: str) -> int:
        return tally.hit(name)

    @app.function(on="push.three", pool="live")
    def three(ctx: Context) -> dict[str, int]:
        key = ctx.event.data["key"]
        return {s: ctx.step.run(s, hit, f"{key}:{s}") for s in "abc"}

    @app.function(on="push.async", pool="live")
    async def asynchronous(ctx: Context) -> list[int]:
        async def body(step: str) -> int:
            await asyncio.sleep(0)
            return hit(f"{ctx.event.data['key']}:{step}")

        return [await ctx.step.run("a", body, "a"), await ctx.step.run("b", body, "b")]

    @app.function(on="push.sleep", pool="live")
    def sleeper(ctx: Context) -> dict[str, float]:
        before = ctx.step.run("before", time.time)
        ctx.step.sleep("nap", ctx.event.data["seconds"])
        after = ctx.step.run("after", time.time)
        return {"before": before, "after": after}

    @app.function(on="push.split", pool="live")
    def split(ctx: Context) -> dict[str, int]:
        n = ctx.step.run("count", lambda: int(ctx.event.data["n"]))
        squares = ctx.step.map("square", square, range(n), pool="background")
        return ctx.step.run("reduce", lambda xs: {"sum": sum(xs), "n": len(xs)}, squares)  # type: ignore[no-any-return]

    @app.function(pool="live")
    def square(ctx: Context) -> int:
        return ctx.step.run("sq", lambda: hit("square") and ctx.event.data ** 2)  # type: ignore[no-any-return]

    @app.function(on="push.fail", pool="live", retries=0)
    def fragile(ctx: Context) -> None:
        def explode() -> None:
            raise NonRetriableError(f"no way: {ctx.event.data['why']}")

        ctx.step.run("boom", explode)

    @fragile.on_failure
    def fragile_failed(ctx: Context, error: StepError | Exception) -> None:
        message = error.message if isinstance(error, StepError) else str(error)
        ctx.step.run("note", lambda: tally.hit("on_failure", (ctx.event.name, ctx.event.data["why"], message)))

    @app.function(on="push.work", pool="live")
    def work(ctx: Context) -> int:
        def busy() -> int:
            time.sleep(0.02)  # the endpoint's workload, so that invocations overlap
            return hit("work")

        return ctx.step.run("w", busy)  # type: ignore[no-any-return]

    @app.function(pool="live")
    def score(ctx: Context) -> Any:
        return ctx.step.run("s", lambda: {"x2": ctx.event.data["x"] * 2})
