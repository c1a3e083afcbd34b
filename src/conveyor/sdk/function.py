"""``@app.function``: a registered durable function, and handles to its runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.errors import RunFailed, RunTimeout
from conveyor.observability import tracing
from conveyor.types import Backoff, Concurrency

if TYPE_CHECKING:
    from conveyor.sdk.app import Conveyor


def default_id(fn: Callable[..., Any]) -> str:
    return fn.__name__.replace("_", "-")


class RunHandle:
    """A run started by ``fn.invoke``: its id, status and (awaited) result."""

    __slots__ = ("_app", "id")

    def __init__(self, app: Conveyor, run_id: str) -> None:
        self._app = app
        self.id = run_id

    def status(self) -> str:
        return self._app.get_run(self.id).status

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end; its output, or :class:`RunFailed` if it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            run = self._app.get_run(self.id)
            if run.status == "completed":
                return run.output
            if run.status in ("failed", "cancelled"):
                err = run.error or {}
                message = err.get("message") or f"run {self.id} was {run.status}"
                raise RunFailed(message, run_id=self.id, error_type=err.get("type", run.status),
                                step_id=err.get("step_id"))
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(f"run {self.id} did not end within {timeout}s (status {run.status})")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.1)

    async def aresult(self, timeout: float | None = None) -> Any:
        return await asyncio.to_thread(self.result, timeout)

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"


class Function:
    """A durable function registered on an app. Call ``invoke`` to start a run of it."""

    def __init__(
        self,
        app: Conveyor,
        fn: Callable[..., Any],
        *,
        id: str,
        triggers: tuple[str, ...],
        retries: int,
        concurrency: Concurrency | None,
        pool: str,
        cron: str | None,
        backoff: Backoff | None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.id = id
        self.triggers = triggers
        self.retries = retries
        self.concurrency = concurrency
        self.pool = pool
        self.cron = cron
        self.backoff = backoff
        self.failure_handler: Callable[..., Any] | None = None
        self.timezone: str | None = None
        self.__name__ = getattr(fn, "__name__", id)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def invoke(self, data: Any = None, pool: str | None = None) -> RunHandle:
        """Start a run of this function with ``data`` as its event data (on ``pool`` rather than
        the function's own pool, if given: e.g. a push endpoint that serves background work)."""
        engine = self.app._engine("invoke()")
        return RunHandle(self.app, engine.start_run(self.id, data, pool, tracing.current_traceparent()))

    async def ainvoke(self, data: Any = None, pool: str | None = None) -> RunHandle:
        return await asyncio.to_thread(self.invoke, data, pool)

    def on_failure(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``handler(ctx, error)``: runs once, durably, each time a run of this function fails."""
        self.app._register_failure_handler(self, handler)
        self.failure_handler = handler
        return handler

    def __repr__(self) -> str:
        return f"<Function {self.id} on={list(self.triggers)} pool={self.pool}>"
