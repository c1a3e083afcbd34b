"""The app the fan-out crash tests run in real worker processes.

``fan-parent`` (pool ``reduce``) maps ``data["count"]`` items ``{"n": i}`` to ``fan-child``
(pool ``default``), then its ``reduce`` step appends one line
``"<run_id> <count> <sha256 of the outputs as JSON> <pid>"`` to
``$FANOUT_LOG_DIR/reduce-<pid>.log``; each ``fan-child`` step body appends
``"<run_id> <n> <attempt> <pid>"`` to ``$FANOUT_LOG_DIR/children-<pid>.log`` when it
starts. Every line is one O_APPEND write, so a SIGKILL cannot tear it and the test can
count executions, including those a kill cut short.

Environment:
  FANOUT_LOG_DIR        where the logs go (required for logging)
  FANOUT_CHILD_SECONDS  how long each child works (default 0.01)
  FANOUT_LEASE_SECONDS  the app's job lease (default 2.0)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import conveyor


def outputs_digest(outputs: list[int]) -> str:
    return hashlib.sha256(json.dumps(outputs, separators=(",", ":")).encode()).hexdigest()


def _append(name: str, line: str) -> None:
    log_dir = os.environ.get("FANOUT_LOG_DIR")
    if not log_dir:
        return
    fd = os.open(
        os.path.join(log_dir, f"{name}-{os.getpid()}.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o644,
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build(database: str | None = None) -> conveyor.Conveyor:
    app = conveyor.Conveyor(
        "fanout",
        database=database,
        backoff=conveyor.Backoff(base=0.01, cap=0.05),
        lease_seconds=float(os.environ.get("FANOUT_LEASE_SECONDS", "2.0")),
    )
    child_seconds = float(os.environ.get("FANOUT_CHILD_SECONDS", "0.01"))

    @app.function(retries=3)
    def fan_child(ctx: conveyor.Context) -> int:
        n = ctx.event.data["n"]

        def double() -> int:
            _append("children", f"{ctx.run_id} {n} {ctx.attempt} {os.getpid()}")
            if child_seconds:
                threading.Event().wait(child_seconds)
            return n * 2

        return ctx.step.run("double", double)

    @app.function(on="fanout.start", pool="reduce", retries=3)
    def fan_parent(ctx: conveyor.Context) -> dict[str, object]:
        results = ctx.step.map("children", fan_child, ({"n": n} for n in range(ctx.event.data["count"])))

        def reduce(outputs: list[int]) -> dict[str, object]:
            outputs = list(outputs)
            digest = outputs_digest(outputs)
            _append("reduce", f"{ctx.run_id} {len(outputs)} {digest} {os.getpid()}")
            return {"count": len(outputs), "sum": sum(outputs), "digest": digest}

        return ctx.step.run("reduce", reduce, results)

    return app


app = build()
