"""What an invocation reports: step writes, side effects, and the op it stopped on.

Also the internal control-flow signals. They derive from ``BaseException`` so
that a user's ``except Exception`` cannot swallow a suspension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class MemoStep:
    """A step as saved in the run's memo."""

    id: str
    kind: str
    status: str  # completed | failed | retrying | sleeping | waiting
    attempts: int = 0
    output: str | None = None  # JSON text
    error: dict[str, Any] | None = None
    wake_at: float | None = None
    seq: int = 0
    started_at: float | None = None


@dataclass(slots=True)
class NewEvent:
    """An event to store (and route) atomically with a step checkpoint."""

    id: str
    name: str
    data: str  # JSON text
    ts: float


@dataclass(slots=True)
class NewChild:
    """A run to create for ``invoke`` (and ``map``): a direct call of one function."""

    run_id: str
    function_id: str
    event: NewEvent
    parent_step: str
    index: int = 0


@dataclass(slots=True)
class NewWait:
    """Register interest in a later event (``wait_for_event``)."""

    event_name: str
    match_path: str | None
    match_value: str | None  # JSON text of the value to match
    expires_at: float | None


@dataclass(slots=True)
class StepWrite:
    """One step checkpoint, with the side effects that commit with it."""

    id: str
    kind: str
    status: str
    attempts: int
    seq: int
    output: str | None = None
    error: dict[str, Any] | None = None
    wake_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    events: list[NewEvent] = field(default_factory=list)
    children: list[NewChild] = field(default_factory=list)
    wait: NewWait | None = None


@dataclass(slots=True)
class LogRecord:
    step_id: str | None
    attempt: int
    ts: float
    level: str
    message: str


# ---- outcomes: how an invocation ended ------------------------------------------------------


@dataclass(slots=True)
class Completed:
    output: str  # JSON text


@dataclass(slots=True)
class Failed:
    error: dict[str, Any]  # {step_id, type, message}


@dataclass(slots=True)
class Suspended:
    """Stopped until ``run_at`` (a timestamp), or until something else wakes it (``None``)."""

    run_at: float | None
    reason: str  # sleep | retry | wait | invoke | map | yield


Outcome = Completed | Failed | Suspended


# ---- control-flow signals --------------------------------------------------------------------


class Suspend(BaseException):  # noqa: N818 - a signal, not an error
    """Unwinds user code when the invocation must stop at a step."""

    def __init__(self, suspended: Suspended, write: StepWrite | None = None) -> None:
        super().__init__(suspended.reason)
        self.suspended = suspended
        self.write = write


class LeaseLost(BaseException):  # noqa: N818
    """The job was taken from this worker (lease expired, run cancelled): stop at once."""


class FatalRunError(BaseException):  # noqa: N818
    """The run must fail now whatever user code does (non-determinism, bad output)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
