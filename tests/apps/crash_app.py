"""The app the crash tests run in real worker processes.

Loaded by ``conveyor worker tests/apps/crash_app.py:app`` (which sets
``CONVEYOR_DATABASE_URL`` from ``--database``) and, in the test process, through
``build()``. Every step body appends one line ``"<run_id> <step> <attempt> <pid>"``
to ``$CRASH_LOG_DIR/steps-<pid>.log`` with a single O_APPEND write when it *starts*,
so the test can count step-body executions, including those a SIGKILL cut short.

Environment:
  CRASH_LOG_DIR        where the step logs go (required for logging)
  CRASH_STEP_SECONDS   how long each step of ``three-steps`` works (default 0.02)
  CRASH_SLOW_SECONDS   how long the step of ``slow-one`` works (default 1.0)
  CRASH_LEASE_SECONDS  the app's job lease (default 2.0)
"""

from __future__ import annotations

import os
import threading

import conveyor


def _log_start(ctx: conveyor.Context, step: str) -> None:
    log_dir = os.environ.get("CRASH_LOG_DIR")
    if not log_dir:
        return
    line = f"{ctx.run_id} {step} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(
        os.path.join(log_dir, f"steps-{os.getpid()}.log"),
        os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        0o644,
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _work(seconds: float) -> None:
    threading.Event().wait(seconds)


def build(database: str | None = None) -> conveyor.Conveyor:
    app = conveyor.Conveyor(
        "crash",
        database=database,
        backoff=conveyor.Backoff(base=0.01, cap=0.05),
        lease_seconds=float(os.environ.get("CRASH_LEASE_SECONDS", "2.0")),
    )
    step_seconds = float(os.environ.get("CRASH_STEP_SECONDS", "0.02"))
    slow_seconds = float(os.environ.get("CRASH_SLOW_SECONDS", "1.0"))

    @app.function(on="crash.three", retries=3)
    def three_steps(ctx: conveyor.Context) -> dict[str, int]:
        def step(name: str, value: int) -> int:
            _log_start(ctx, name)
            _work(step_seconds)
            return value + 1

        a = ctx.step.run("one", step, "one", ctx.event.data["n"])
        b = ctx.step.run("two", step, "two", a)
        c = ctx.step.run("three", step, "three", b)
        return {"n": ctx.event.data["n"], "out": c}

    @app.function(on="crash.slow", retries=3)
    def slow_one(ctx: conveyor.Context) -> dict[str, int]:
        def slow() -> dict[str, int]:
            _log_start(ctx, "slow")
            _work(slow_seconds)
            return {"pid": os.getpid()}

        return ctx.step.run("slow", slow)

    return app


app = build()
