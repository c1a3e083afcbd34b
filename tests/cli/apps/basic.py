"""Apps for the CLI tests. The database comes from $CONVEYOR_DATABASE_URL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import conveyor
from conveyor import Context, NonRetriableError

app = conveyor.Conveyor("cli-test")

not_an_app = 42


def make_greeting(name: str) -> str:
    return f"hello {name}"


@app.function(on="greet.requested", retries=0)
def greet(ctx: Context) -> dict[str, Any]:
    greeting = ctx.step.run("make-greeting", make_greeting, ctx.event.data.get("name", "world"))
    return {"greeting": greeting}


def count(path: str | None) -> None:
    """A side effect that shows how often a step ran: one ``x`` per execution."""
    if path:
        with open(path, "a") as f:
            f.write("x")


def check_flag(path: str) -> str:
    if not Path(path).exists():
        raise NonRetriableError(f"flag file {path} is missing")
    return "flag found"


@app.function(on="flagged.requested", retries=0)
def flagged(ctx: Context) -> str:
    """Fails until the file named by ``data.flag`` exists; then replay/redrive completes it."""
    ctx.step.run("before", count, ctx.event.data.get("counter"))
    return str(ctx.step.run("check-flag", check_flag, ctx.event.data["flag"]))


@app.function(on="nap.requested")
def nap(ctx: Context) -> str:
    ctx.step.sleep("nap", timedelta(hours=1))
    return "rested"


@app.function(on="logged.requested", retries=0)
def logged(ctx: Context) -> int:
    """Two steps and three log lines: what ``runs show`` lays out as a timeline and a log."""
    ctx.log.info("starting for %s", ctx.event.data.get("who", "nobody"))
    first = ctx.step.run("first", lambda: 1)
    ctx.log.warning("between the steps")
    second = ctx.step.run("second", lambda: 2)
    ctx.log.error("all done")
    return int(first) + int(second)
