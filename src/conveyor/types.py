"""Plain data types of the public API: events, runs, steps, statuses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class StepKind(StrEnum):
    RUN = "run"
    SLEEP = "sleep"
    WAIT_FOR_EVENT = "wait_for_event"
    INVOKE = "invoke"
    MAP = "map"
    SEND_EVENT = "send_event"


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """An event: ``{id, name, data, ts}``. ``data`` is a JSON object for sent events."""

    name: str
    data: Any = field(default_factory=dict)
    id: str | None = None
    ts: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "ts": self.ts.isoformat() if self.ts else None,
        }


@dataclass(frozen=True, slots=True)
class StepRecord:
    id: str
    kind: str
    status: str
    attempts: int
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: When a sleeping step wakes, a retrying one is tried again, a waiting one times out.
    wake_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """A parent's children: counts by status, and how fast they end.

    ``rate`` is children ended per second since the first was created (``started_at``);
    ``eta`` the seconds left at that rate (``None`` until one has ended).
    """

    total: int = 0
    queued: int = 0
    running: int = 0
    waiting: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    started_at: datetime | None = None
    rate: float = 0.0
    eta: float | None = None

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def done(self) -> bool:
        return self.total > 0 and self.ended >= self.total


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    function_id: str
    event_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[StepRecord] = field(default_factory=list)
    parent_id: str | None = None
    progress: Progress | None = None
    pool: str = "default"
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        def ts(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": self.id,
            "function_id": self.function_id,
            "event_id": self.event_id,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "parent_id": self.parent_id,
            "pool": self.pool,
            "created_at": ts(self.created_at),
            "started_at": ts(self.started_at),
            "ended_at": ts(self.ended_at),
            "progress": None if self.progress is None else {
                "total": self.progress.total,
                "queued": self.progress.queued,
                "running": self.progress.running,
                "waiting": self.progress.waiting,
                "completed": self.progress.completed,
                "failed": self.progress.failed,
                "cancelled": self.progress.cancelled,
                "started_at": ts(self.progress.started_at),
                "rate": self.progress.rate,
                "eta": self.progress.eta,
            },
            "steps": [
                {
                    "id": s.id,
                    "kind": s.kind,
                    "status": s.status,
                    "attempts": s.attempts,
                    "output": s.output,
                    "error": s.error,
                    "started_at": ts(s.started_at),
                    "ended_at": ts(s.ended_at),
                    "wake_at": ts(s.wake_at),
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True, slots=True)
class Concurrency:
    """A cap on runs of one function executing at the same moment.

    ``key`` (e.g. ``"event.data.user_id"``) makes the cap apply per distinct value.
    Runs that are sleeping or waiting do not count.
    """

    limit: int
    key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError("Concurrency.limit must be a positive integer")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between attempts of a step.

    The n-th retry waits ``min(cap, base * factor**n)`` scaled by a random factor in
    ``[1 - jitter, 1]``.
    """

    base: float = 1.0
    cap: float = 600.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff: base/cap >= 0, factor >= 1, 0 <= jitter <= 1")


def utc_from_ts(ts: float | None) -> datetime | None:
    return _utc(ts)


def ts_from_datetime(when: datetime) -> float:
    """Unix seconds of ``when``; a naive datetime is taken as UTC (as the API's timestamps are)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last instant an ISO 8601 date can name
_AGE = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)\s*([smhdw])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float) -> float:
    """A point in time, as Unix seconds, from what a person or a client writes: an age before
    ``now`` (``90s``, ``15m``, ``2h``, ``7d``, ``1w``), Unix seconds (never milliseconds), or ISO
    8601 (UTC unless it names an offset). The one reading of ``since``/``until`` for the CLI, the
    HTTP API and the dashboard; ``ValueError`` saying what is accepted for anything else."""
    text = text.strip()
    age = _AGE.fullmatch(text.lower())
    if age:
        ts = now - float(age.group(1)) * _AGE_SECONDS[age.group(2)]
    else:
        try:
            ts = float(text)
        except ValueError:
            try:
                ts = ts_from_datetime(datetime.fromisoformat(text))
            except ValueError:
                raise ValueError(
                    f"{text[:40]!r} is not a time: use an age (90s, 15m, 2h, 7d), Unix seconds, "
                    "or ISO 8601 (2026-12-01T08:00:00Z)"
                ) from None
    if not 0 <= ts <= LAST_TIME:  # NaN fails both
        raise ValueError(f"{text[:40]!r} is out of range (from 1970 to the year 9999)")
    return ts
