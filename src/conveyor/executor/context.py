"""The ``Context`` handed to user functions, and ``ctx.log``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from conveyor.types import Event

if TYPE_CHECKING:
    from conveyor.executor.invocation import Invocation
    from conveyor.executor.steps import AsyncSteps, SyncSteps

_run_logger = logging.getLogger("conveyor.run")


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A ``logging.Logger``-compatible logger whose records are stored with the run and step.

    Records go to the ``conveyor.run`` logger too, carrying ``run_id``, ``step_id`` and
    ``attempt``. While an invocation replays memoized steps, code between them runs
    again; its log calls are dropped so that a run's log is not written twice.
    """

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(_run_logger, {})
        self._inv = invocation

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.update(self._inv.log_fields())
        kwargs["extra"] = extra
        return msg, kwargs

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.INFO or self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._inv.replaying or not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        self._inv.record_log(level, text)
        if self.logger.isEnabledFor(level):
            msg, extra = self.process(msg, kwargs)
            self.logger.log(level, msg, *args, **extra)


class Context:
    """What a function sees: its event, run id, attempt, logger and steps.

    In an ``async def`` function each ``ctx.step`` call is awaited; in a ``def``
    function it returns directly.
    """

    __slots__ = ("_inv", "event", "log", "run_id", "step")

    def __init__(self, invocation: Invocation, steps: SyncSteps | AsyncSteps) -> None:
        self._inv = invocation
        self.event: Event = invocation.event
        self.run_id: str = invocation.run_id
        self.step: Any = steps
        self.log: RunLogger = RunLogger(invocation)

    @property
    def attempt(self) -> int:
        """The current attempt of the current step, from 0."""
        return self._inv.attempt

    @property
    def function_id(self) -> str:
        return self._inv.function_id

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} event={self.event.name!r}>"
