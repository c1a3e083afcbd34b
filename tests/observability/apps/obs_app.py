"""The app the observability tests run in real ``conveyor dev`` and ``conveyor worker`` processes.

Its database comes from ``--database`` (``Conveyor`` without ``database=``).
"""

from __future__ import annotations

import conveyor

app = conveyor.Conveyor("obs", backoff=conveyor.Backoff(base=0.01, cap=0.05))


@app.function(on="obs.ok", retries=0)
def ok(ctx: conveyor.Context) -> int:
    one = ctx.step.run("one", lambda: 1)
    return ctx.step.run("two", lambda: one + 1)  # type: ignore[no-any-return]


@app.function(on="obs.flaky", retries=2)
def flaky(ctx: conveyor.Context) -> str:
    def attempt() -> str:
        if ctx.attempt == 0:
            raise RuntimeError("the first attempt fails")
        return "ok"

    return ctx.step.run("attempt", attempt)  # type: ignore[no-any-return]


@app.function(on="obs.doomed", retries=0)
def doomed(ctx: conveyor.Context) -> None:
    def explode() -> None:
        raise ValueError(f"no way: {ctx.event.data.get('why', 'doomed')}")

    ctx.step.run("explode", explode)


@app.function(on="obs.fan", retries=0)
def fan(ctx: conveyor.Context) -> int:
    squares = ctx.step.map("each", square, ctx.event.data.get("items", [1, 2, 3]))
    return ctx.step.run("sum", lambda: sum(squares))  # type: ignore[no-any-return]


@app.function(retries=0)
def square(ctx: conveyor.Context) -> int:
    return ctx.step.run("square", lambda: ctx.event.data ** 2)  # type: ignore[no-any-return]
