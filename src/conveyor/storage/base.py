"""The storage contract, in domain verbs.

Every backend implements this class and passes the same conformance suite.
State writes are *fenced*: a worker's writes for a run apply only while the run's
job still carries the lease token the worker claimed it with, so a worker that
lost its lease (it stalled, or the run was cancelled) cannot overwrite anything.
Terminal states never change, and a finished step is never rewritten.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.records import LogRecord, MemoStep, NewEvent, Outcome, StepWrite


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What the database must know of a function to route events and limit concurrency."""

    id: str
    pool: str
    triggers: tuple[str, ...]
    retries: int
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    cron: str | None = None
    has_on_failure: bool = False


@dataclass(slots=True)
class DirectRun:
    """A run of one named function, not routed by event name (``fn.invoke``)."""

    run_id: str
    function_id: str
    event: NewEvent
    pool: str | None = None  # the pool that serves it (None: the function's own pool)


@dataclass(slots=True)
class ClaimedJob:
    run_id: str
    token: int
    function_id: str
    pool: str
    event_id: str
    event_name: str
    event_data: str  # JSON text
    event_ts: float
    memo: dict[str, MemoStep]
    failure_of: str | None  # for an on_failure run: the failed run's id
    db_now: float = 0.0  # the database clock when the job was claimed
    skew: float = 0.0  # the database clock minus the worker's (set by the engine)
    trace: str | None = None  # the event's W3C traceparent: the run's spans join the sender's trace
    first: bool = False  # the run's first claim: it starts now


@dataclass(slots=True)
class JobResult:
    """Everything one invocation wrote, applied atomically and fenced by ``token``."""

    run_id: str
    token: int
    function_id: str
    steps: list[StepWrite] = field(default_factory=list)
    outcome: Outcome | None = None  # None: intermediate checkpoint only
    logs: list[LogRecord] = field(default_factory=list)
    on_failure: bool = False  # the function has a handler to start if the run fails
    release: bool = False  # give the job back (worker stopping, push delivery failed)
    delay: float = 0.0  # with ``release``: the job is due again this many seconds from now
    ack: Any = None  # a concurrent.futures.Future the committer resolves with the fence's verdict


@dataclass(slots=True)
class RunRow:
    id: str
    function_id: str
    event_id: str
    status: str
    pool: str
    output: str | None
    error: str | None
    parent_id: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None


@dataclass(slots=True)
class StepRow:
    run_id: str
    id: str
    seq: int
    kind: str
    status: str
    attempts: int
    output: str | None
    error: str | None
    wake_at: float | None
    started_at: float | None
    ended_at: float | None


@dataclass(slots=True)
class EventRow:
    id: str
    name: str
    data: str
    ts: float


@dataclass(frozen=True, slots=True)
class RunFilter:
    function: str | None = None
    status: str | None = None
    event_id: str | None = None
    parent_id: str | None = None
    before: str | None = None  # run id cursor: runs older than this one (a parent's children: after it)
    limit: int = 100
    since: float | None = None  # runs created at or after this time (Unix seconds)
    until: float | None = None  # runs created before this time
    #: Only runs without a parent (no child of a map or invoke). Served by an index of its own
    #: when it is the only filter (besides the time window); a residual filter otherwise.
    top_level: bool = False


@dataclass(frozen=True, slots=True)
class FunctionRow:
    """A function as the database knows it (registered by some app)."""

    spec: FunctionSpec
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventCursor:
    """Where a page of events (newest first) ends: the last event's time and id. Its text,
    ``<ts>~<id>``, is the ``next`` of the API's event pages and the dashboard's "older" link."""

    ts: float
    id: str

    def __str__(self) -> str:
        return f"{self.ts!r}~{self.id}"

    @classmethod
    def parse(cls, text: str) -> EventCursor:
        """The cursor that ``str()`` gave, or ``ValueError``."""
        ts, sep, event_id = text.partition("~")
        try:
            value = float(ts)
        except ValueError:
            value = math.nan
        if not sep or not event_id or not math.isfinite(value):
            raise ValueError("invalid cursor; pass the 'next' value of the previous page")
        return cls(value, event_id)


@dataclass(frozen=True, slots=True)
class PoolBacklog:
    pool: str
    due: int  # jobs whose time has come (leased ones included)
    oldest_due_at: float | None  # the earliest run_at among them


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A live process that serves pools: a pull worker, or a server's push dispatcher."""

    id: str
    kind: str  # "worker" | "dispatcher"
    host: str
    pid: int
    pools: tuple[str, ...]
    concurrency: int
    started_at: float
    seen_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FunctionStats:
    """A function's runs created in a time window, by how they stand."""

    runs: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A push endpoint: an HTTP service that advances the runs of ``pool`` for ``functions``."""

    url: str
    pool: str
    functions: tuple[str, ...]
    concurrency: int = 16
    rate: float | None = None
    timeout: float = 300.0
    registered_at: float = 0.0
    seen_at: float = 0.0


class Listener(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def poke(self) -> None: ...
    def close(self) -> None: ...


class Storage(ABC):
    """A database that holds events, runs, steps, jobs and logs."""

    url: str
    #: How many write transactions can usefully run at once (SQLite has one writer at a time).
    parallel_writes: int = 1

    # ---- lifecycle ----------------------------------------------------------------------------
    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending migrations (safe when several processes do it at once)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def now(self) -> float:
        """The database's clock, in Unix seconds."""

    @abstractmethod
    def ping(self) -> None:
        """Read from the database, or raise: what a health check asks."""

    @abstractmethod
    def maintain(self) -> None:
        """Periodic housekeeping of the backend (statistics, log size); workers call it."""

    @abstractmethod
    def listener(self) -> Listener:
        """A channel on which this process hears that new work may be due."""

    @abstractmethod
    def notify(self) -> None:
        """Tell listening workers (of every process) that new work may be due."""

    # ---- functions and events -----------------------------------------------------------------
    @abstractmethod
    def functions_sync(self, specs: Sequence[FunctionSpec]) -> None:
        """Upsert these functions and their event triggers."""

    @abstractmethod
    def events_send(self, events: Sequence[NewEvent]) -> list[bool]:
        """Store events and start one run per matching function, in one transaction.

        Returns, per event, whether it was new (a known id is accepted and ignored).
        """

    @abstractmethod
    def runs_start(self, runs: Sequence[DirectRun]) -> None:
        """Store each run's event and the run itself, for a named function."""

    # ---- jobs ---------------------------------------------------------------------------------
    @abstractmethod
    def jobs_claim(
        self, worker: str, pools: Sequence[str], functions: Sequence[str], limit: int, lease: float
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs (expired leases included), with their memos."""

    @abstractmethod
    def jobs_heartbeat(self, leases: Sequence[tuple[str, int]], lease: float) -> list[str]:
        """Extend these leases; return the run ids whose lease was lost."""

    @abstractmethod
    def jobs_commit(self, results: Sequence[JobResult]) -> list[bool]:
        """Apply each result in one transaction; per result, whether its fence held."""

    @abstractmethod
    def jobs_next_due(self, pools: Sequence[str], functions: Sequence[str]) -> float | None:
        """When the next job of these pools is due (leased jobs: when their lease expires)."""

    # ---- runs ---------------------------------------------------------------------------------
    @abstractmethod
    def run_get(self, run_id: str) -> RunRow | None: ...

    @abstractmethod
    def runs_list(self, flt: RunFilter) -> list[RunRow]: ...

    @abstractmethod
    def runs_of_events(self, event_ids: Sequence[str], limit_per_event: int) -> dict[str, list[RunRow]]:
        """The runs each of these events started, newest first, at most ``limit_per_event`` of
        each, in one query (a page of events shows them all). Every id given is a key: an event
        that started no run (or is unknown) has an empty list."""

    @abstractmethod
    def steps_list(self, run_id: str) -> list[StepRow]: ...

    @abstractmethod
    def children_counts(self, run_id: str) -> dict[str, int]:
        """A parent's children by status."""

    @abstractmethod
    def children_outputs(self, run_id: str, step_id: str, offset: int, limit: int) -> list[str | None]:
        """Outputs (JSON text) of a step's child runs, in item order, from ``offset``."""

    @abstractmethod
    def child_error(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None:
        """The error of the step's child at ``index``, or None if it completed."""

    @abstractmethod
    def function_exists(self, function_id: str) -> bool: ...

    @abstractmethod
    def event_get(self, event_id: str) -> EventRow | None: ...

    @abstractmethod
    def logs_list(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]: ...

    @abstractmethod
    def run_cancel(self, run_id: str) -> bool:
        """Cancel a run that has not ended (and its unfinished children)."""

    @abstractmethod
    def run_requeue(self, run_id: str, from_statuses: Sequence[str]) -> bool:
        """Send an ended run back to ``queued``, keeping its finished steps."""

    @abstractmethod
    def runs_prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        """Delete up to ``limit`` top-level runs in ``statuses`` that ended before ``before``, with
        their children, steps, logs and events no other run uses; returns how many top-level runs."""

    @abstractmethod
    def runs_delete(self, run_ids: Sequence[str]) -> int:
        """Delete these runs (with their children, steps, logs and unused events)."""

    @abstractmethod
    def fanouts_reconcile(self, waited_since: float, limit: int) -> int:
        """Recount the children of fan-out steps waiting since before ``waited_since`` from their
        actual statuses, and resolve those whose children all ended; returns how many it resolved."""

    @abstractmethod
    def schedule_advance(
        self, function_id: str, cron: str, timezone: str, now: float,
        plan: Callable[[float, float], tuple[float | None, int, float]],
    ) -> float | None:
        """Under the schedule's lock: ``plan(last_slot, now) -> (slot to fire or None, newly missed,
        new last_slot)``; start the fired run (its event id is the slot, so it starts once) and
        record the rest. A schedule seen for the first time starts at ``now``. Returns the slot fired."""

    @abstractmethod
    def schedules_list(self) -> list[tuple[str, str, str, float | None, int]]:
        """``(function_id, cron, timezone, last_slot, missed)`` of every schedule."""

    # ---- listing (HTTP API, dashboard) ---------------------------------------------------------
    @abstractmethod
    def functions_list(self) -> list[FunctionRow]:
        """Every function some app registered, with its triggers, by id."""

    @abstractmethod
    def events_list(self, name: str | None, before: EventCursor | None, limit: int, *,
                    internal: bool = True) -> list[EventRow]:
        """Events newest first (by time, then id), optionally of one name, after a cursor.

        ``internal=False`` leaves out the events Conveyor makes itself (names starting with
        :data:`conveyor.records.INTERNAL_PREFIX`: one per child of a map, per invoke, per cron
        tick), which can outnumber the events applications send by far. It applies only when no
        ``name`` is given: a name, internal or not, lists the events of that name."""

    @abstractmethod
    def pools_backlog(self, now: float) -> list[PoolBacklog]:
        """Per pool: how many jobs are due at ``now``, and the oldest due time."""

    @abstractmethod
    def functions_stats(self, since: float) -> dict[str, FunctionStats]:
        """Per function: its runs created since ``since``, and how many of them failed."""

    @abstractmethod
    def runs_count(self, status: str) -> int:
        """How many runs (children included) have this status."""

    # ---- live processes -----------------------------------------------------------------------
    @abstractmethod
    def worker_beat(self, worker: WorkerRow) -> None:
        """Record that this worker is alive now (insert or update); forget long-silent ones."""

    @abstractmethod
    def workers_list(self, seen_since: float) -> list[WorkerRow]:
        """Workers heard from since ``seen_since``, by id."""

    @abstractmethod
    def worker_remove(self, worker_id: str) -> None:
        """A worker that stopped cleanly."""

    # ---- push endpoints -----------------------------------------------------------------------
    @abstractmethod
    def endpoint_register(self, endpoint: Endpoint) -> None:
        """Insert or update the endpoint with this URL."""

    @abstractmethod
    def endpoints_list(self) -> list[Endpoint]: ...

    @abstractmethod
    def endpoint_remove(self, url: str) -> bool: ...

    @abstractmethod
    def events_prune(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` events older than ``before`` that started no run."""
