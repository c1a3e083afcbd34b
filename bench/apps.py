"""The benchmark application, loaded by the worker processes that ``bench/run.py`` starts.

    conveyor worker bench/apps.py:app --database sqlite:////tmp/x.db --concurrency 16

The database comes from ``CONVEYOR_DATABASE_URL`` (``run.py`` sets it for every
scenario, one fresh SQLite file each). Functions:

* ``bench-one``     on ``bench.one``:     one no-op step.
* ``bench-three``   on ``bench.three``:   three no-op steps.
* ``bench-latency`` on ``bench.latency``: one step whose body records ``time.time()``
  the moment it starts, and returns it with ``started - event.data["t0"]``.

``BENCH_STYLE=async`` registers the same functions as ``async def`` (the default is
plain ``def``), to compare the worker's two execution paths.
"""

from __future__ import annotations

import os
import time
from typing import Any

from conveyor import Context, Conveyor

STYLE = os.environ.get("BENCH_STYLE", "sync")
if STYLE not in ("sync", "async"):
    raise SystemExit(f"BENCH_STYLE must be 'sync' or 'async', not {STYLE!r}")

app = Conveyor("bench", database=os.environ["CONVEYOR_DATABASE_URL"])


def noop() -> None:
    return None


def stamp(t0: float) -> dict[str, float]:
    started = time.time()  # first thing the step body does
    return {"started": started, "latency": started - t0}


if STYLE == "sync":

    @app.function(id="bench-one", on="bench.one", retries=0)
    def bench_one(ctx: Context) -> None:
        ctx.step.run("a", noop)

    @app.function(id="bench-three", on="bench.three", retries=0)
    def bench_three(ctx: Context) -> None:
        ctx.step.run("a", noop)
        ctx.step.run("b", noop)
        ctx.step.run("c", noop)

    @app.function(id="bench-latency", on="bench.latency", retries=0)
    def bench_latency(ctx: Context) -> Any:
        return ctx.step.run("stamp", stamp, ctx.event.data["t0"])

else:

    @app.function(id="bench-one", on="bench.one", retries=0)
    async def bench_one(ctx: Context) -> None:
        await ctx.step.run("a", noop)

    @app.function(id="bench-three", on="bench.three", retries=0)
    async def bench_three(ctx: Context) -> None:
        await ctx.step.run("a", noop)
        await ctx.step.run("b", noop)
        await ctx.step.run("c", noop)

    @app.function(id="bench-latency", on="bench.latency", retries=0)
    async def bench_latency(ctx: Context) -> Any:
        return await ctx.step.run("stamp", stamp, ctx.event.data["t0"])
