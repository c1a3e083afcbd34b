"""Records that cross from the executor to storage: the memo going in, and the step
writes, side effects and outcome coming out. A leaf: imports only the stdlib."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How the names of the events Conveyor makes itself begin (a map's children, invokes, cron
#: ticks): applications may not send such names, and event listings can leave them out.
INTERNAL_PREFIX = "conveyor/"


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
    children_total: int | None = None
    children_created: int = 0


@dataclass(slots=True)
class NewEvent:
    """An event to store (and route) atomically with a step checkpoint."""

    id: str
    name: str
    data: str  # JSON text
    ts: float
    trace: str | None = None  # W3C traceparent of the span that sent it (runs it starts join that trace)


@dataclass(slots=True)
class NewChild:
    """A run to create for ``invoke`` (and ``map``): a direct call of one function."""

    run_id: str
    function_id: str
    event: NewEvent
    parent_step: str
    index: int = 0
    pool: str | None = None  # the pool that serves it (None: the function's own pool)


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
    children_total: int | None = None
    children_created: int = 0
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
