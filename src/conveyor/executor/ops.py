"""Internal control-flow signals of an invocation.

They derive from ``BaseException`` so that a user's ``except Exception`` cannot
swallow a suspension. The records an invocation reports live in
:mod:`conveyor.records`.
"""

from __future__ import annotations

from typing import Any

from conveyor.records import StepWrite, Suspended

# ---- control-flow signals --------------------------------------------------------------------


class Suspend(BaseException):
    """Unwinds user code when the invocation must stop at a step."""

    def __init__(self, suspended: Suspended, write: StepWrite | None = None) -> None:
        super().__init__(suspended.reason)
        self.suspended = suspended
        self.write = write


class LeaseLost(BaseException):
    """The job was taken from this worker (lease expired, run cancelled): stop at once."""


class FatalRunError(BaseException):
    """The run must fail now whatever user code does (non-determinism, bad output)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
