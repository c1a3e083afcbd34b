"""The engine: the only writer of run state.

Workers, the CLI and the SDK call it; it turns their requests and the executor's
reports into storage verbs, and storage applies them atomically and fenced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from conveyor.engine.prepare import InvocationInput, build_invocation, invocation_input, unknown_function
from conveyor.engine.registry import Registry
from conveyor.engine.reporting import report_claims, report_commit
from conveyor.errors import InvalidInput, InvalidState, NotFound
from conveyor.executor import codec
from conveyor.executor.invocation import Invocation, InvocationResult, Sink
from conveyor.ids import new_id
from conveyor.observability.hooks import EventsAccepted, Hooks
from conveyor.records import Completed, Failed, LogRecord, NewEvent, Outcome, StepWrite
from conveyor.storage.base import (
    ClaimedJob,
    DirectRun,
    FunctionStats,
    JobResult,
    RunFilter,
    RunRow,
    Storage,
    WorkerRow,
)
from conveyor.storage.blobs import BlobStore
from conveyor.types import Backoff, Progress, Run, RunStatus, StepRecord, utc_from_ts

log = logging.getLogger(__name__)
REPLAYABLE = ("failed", "cancelled")  # the runs replay_run sends back to the queue
WORKER_BEAT = 10.0  # seconds between a worker's "alive" beats
WORKER_TTL = 3 * WORKER_BEAT + 5  # a worker not heard from for this long is taken for gone
RUN_STATUSES = frozenset(s.value for s in RunStatus)


class Engine:
    def __init__(
        self,
        storage: Storage,
        registry: Registry,
        *,
        backoff: Backoff,
        lease: float = 30.0,
        budget: float = 60.0,
        retention: float | None = 7 * 86400.0,
        cron_catchup: float = 3600.0,
        blobs: BlobStore | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.hooks = hooks or Hooks()  # the event catalog it emits into (metrics subscribe)
        self.blobs = blobs or BlobStore("conveyor-blobs")
        self.view = _BlobView(storage, self.blobs)
        self.retention = retention
        self.cron_catchup = cron_catchup
        self.storage = storage
        self.registry = registry
        self.backoff = backoff
        self.lease = lease
        self.budget = budget
        self._synced = -1
        self._sync_lock = threading.Lock()
        self._migrated = False

    # ---- readiness ----------------------------------------------------------------------------

    def ready(self) -> None:
        """Migrate on first use and tell the database about newly registered functions."""
        if self._synced == self.registry.version:
            return
        with self._sync_lock:
            if not self._migrated:
                self.storage.migrate()
                self._migrated = True
            version = self.registry.version
            if self._synced != version:
                self.storage.functions_sync(self.registry.specs())
                self._synced = version

    # ---- intake -------------------------------------------------------------------------------

    def send(self, events: Sequence[NewEvent]) -> list[str]:
        self.ready()
        self.storage.events_send(events)
        self.storage.notify()
        if self.hooks.wants(EventsAccepted):
            self.hooks.emit(EventsAccepted(len(events)))
        return [e.id for e in events]

    def start_run(self, function_id: str, data: Any, pool: str | None = None, trace: str | None = None) -> str:
        """Start a run of ``function_id`` (on ``pool`` rather than the function's own, if given),
        in the trace ``trace`` (a W3C traceparent) if given."""
        self.ready()
        if self.registry.get(function_id) is None:
            raise NotFound(f"unknown function {function_id!r}")
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise InvalidInput("pool must be a non-empty string")
        run_id = new_id()
        payload = codec.dumps({} if data is None else data, what=f"the data for {function_id!r}")
        event = NewEvent(run_id, "conveyor/invoke", payload, time.time(), trace)
        self.storage.runs_start([DirectRun(run_id, function_id, event, pool)])
        self.storage.notify()
        return run_id

    # ---- execution ----------------------------------------------------------------------------

    def claim(
        self, worker: str, pools: Sequence[str], limit: int, lease: float | None = None,
        functions: Sequence[str] | None = None,
    ) -> list[ClaimedJob]:
        """Lease due jobs of ``pools`` for ``functions`` (default: this registry's functions)."""
        self.ready()
        before = time.time()
        fns = self.registry.ids() if functions is None else functions
        jobs = self.storage.jobs_claim(worker, pools, fns, limit, lease or self.lease)
        for job in jobs:  # the database clock minus ours, measured from before the claim: never early
            job.skew = job.db_now - before if job.db_now else 0.0
        report_claims(self.hooks, jobs)
        return jobs

    def next_due(self, pools: Sequence[str], functions: Sequence[str] | None = None) -> float | None:
        return self.storage.jobs_next_due(pools, self.registry.ids() if functions is None else functions)

    def prepare(self, job: ClaimedJob, sink: Sink) -> Invocation | JobResult:
        """The invocation that advances this job, or at once the result if it cannot run."""
        if self.registry.get(job.function_id) is None:
            return JobResult(job.run_id, job.token, job.function_id, outcome=unknown_function(job.function_id))
        blobs = self.blobs

        def offloading_sink(write: StepWrite) -> Any:
            write.output = blobs.offload(write.output)
            return sink(write)

        built = build_invocation(
            self.registry, self.invocation_input(job), offloading_sink,
            backoff=self.backoff, budget=self.budget, view=self.view,
        )
        if isinstance(built, Failed):
            return JobResult(job.run_id, job.token, job.function_id, outcome=built)
        return built

    def invocation_input(self, job: ClaimedJob) -> InvocationInput:
        """The database's half of an invocation (a push dispatcher sends it to an endpoint)."""
        return invocation_input(job, self.storage, self.blobs)

    def job_result(
        self, job: ClaimedJob, steps: list[StepWrite], outcome: Outcome | None, logs: list[LogRecord], *,
        on_failure: bool,
    ) -> JobResult:
        """What an invocation reported, with large outputs offloaded to the blob store."""
        for write in steps:
            write.output = self.blobs.offload(write.output)
        if isinstance(outcome, Completed):
            outcome.output = self.blobs.offload(outcome.output) or "null"
        return JobResult(job.run_id, job.token, job.function_id, steps=steps, outcome=outcome, logs=logs,
                         on_failure=on_failure)

    def result_of(self, job: ClaimedJob, result: InvocationResult) -> JobResult:
        definition = self.registry.get(job.function_id)
        return self.job_result(
            job, [result.final_write] if result.final_write else [], result.outcome, result.logs,
            on_failure=bool(definition and definition.spec.has_on_failure),
        )

    def commit(self, results: Sequence[JobResult]) -> list[bool]:
        """Apply results (each fenced by its lease token); per result, whether it was applied.
        The one commit path of pull workers, ``drain`` and the push dispatcher: what they
        committed is reported here (see :mod:`conveyor.engine.reporting`)."""
        accepted = self.storage.jobs_commit(results)
        try:
            report_commit(self.hooks, results, accepted)
        except Exception:  # a reporting bug must not make the caller retry a batch already committed
            log.exception("reporting a commit of %d results failed", len(results))
        return accepted

    def heartbeat(self, leases: Sequence[tuple[str, int]], lease: float | None = None) -> list[str]:
        return self.storage.jobs_heartbeat(leases, lease or self.lease)

    # ---- inspection ---------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        self.ready()
        row = self.storage.run_get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return self._run(row, with_steps=True)

    def list_runs(self, flt: RunFilter, *, with_steps: bool = True) -> list[Run]:
        """Runs newest first; without steps (and progress) when only a summary is needed."""
        self.ready()
        if flt.status is not None and flt.status not in RUN_STATUSES:
            raise InvalidInput(f"unknown run status {flt.status!r}; one of {', '.join(sorted(RUN_STATUSES))}")
        if not isinstance(flt.limit, int) or flt.limit < 1:
            raise InvalidInput("limit must be a positive integer")
        return [self._run(r, with_steps=with_steps) for r in self.storage.runs_list(flt)]

    def _run(self, row: RunRow, *, with_steps: bool) -> Run:
        steps = []
        if with_steps:
            last = 253402300799.0  # the end of year 9999, the last time a datetime holds (a sleep may go further)
            steps = [
                StepRecord(
                    s.id, s.kind, s.status, s.attempts, codec.loads(self.blobs.resolve(s.output)), codec.loads(s.error),
                    utc_from_ts(s.started_at), utc_from_ts(s.ended_at),
                    None if s.wake_at is None else utc_from_ts(min(s.wake_at, last)),
                )
                for s in self.storage.steps_list(row.id)
            ]
        progress = None
        if with_steps and any(s.kind in ("map", "invoke") for s in steps):
            progress = self._progress(row.id, [s for s in steps if s.kind in ("map", "invoke")])
        return Run(
            id=row.id, function_id=row.function_id, event_id=row.event_id, status=row.status,
            output=codec.loads(self.blobs.resolve(row.output)), error=codec.loads(row.error), steps=steps,
            parent_id=row.parent_id, progress=progress, pool=row.pool,
            created_at=utc_from_ts(row.created_at), started_at=utc_from_ts(row.started_at),
            ended_at=utc_from_ts(row.ended_at),
        )

    def _progress(self, run_id: str, fanouts: list[StepRecord]) -> Progress:
        counts = self.storage.children_counts(run_id)
        known = {k: v for k, v in counts.items() if k in RUN_STATUSES}
        total = sum(counts.values())
        ended = known.get("completed", 0) + known.get("failed", 0) + known.get("cancelled", 0)
        started = min((s.started_at for s in fanouts if s.started_at), default=None)
        finished = max((s.ended_at for s in fanouts if s.ended_at), default=None) if ended >= total else None
        rate, eta = 0.0, None
        if started is not None and ended:
            until = finished.timestamp() if finished else time.time()
            rate = ended / max(until - started.timestamp(), 1e-3)
            eta = (total - ended) / rate
        return Progress(total=total, started_at=started, rate=rate, eta=eta, **known)

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        return self.storage.logs_list(run_id)

    def function_stats(self, since: float) -> dict[str, FunctionStats]:
        """Per registered function: runs created since ``since`` (database time), and failures."""
        self.ready()
        return self.storage.functions_stats(since)

    def count_runs(self, status: str) -> int:
        self.ready()
        return self.storage.runs_count(status)

    # ---- live processes -----------------------------------------------------------------------

    def worker_alive(self, worker: WorkerRow) -> None:
        self.storage.worker_beat(worker)

    def worker_gone(self, worker_id: str) -> None:
        self.storage.worker_remove(worker_id)

    def workers(self) -> list[WorkerRow]:
        """Workers and dispatchers heard from lately."""
        self.ready()
        return self.storage.workers_list(self.storage.now() - WORKER_TTL)

    # ---- operations ---------------------------------------------------------------------------

    def cancel(self, run_id: str) -> None:
        self.ready()
        if self.storage.run_cancel(run_id):
            self.storage.notify()
            return
        row = self.storage.run_get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        raise InvalidState(f"run {run_id} has already ended ({row.status}); nothing to cancel")

    def replay(self, run_id: str) -> None:
        """Send a failed or cancelled run back to the queue; it continues from the step where it
        stopped, with its finished steps kept (the same run id). The one rule for every caller."""
        self.ready()
        if self.storage.run_requeue(run_id, REPLAYABLE):
            self.storage.notify()
            return
        row = self.storage.run_get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        raise InvalidState(f"run {run_id} is {row.status}; only {', '.join(REPLAYABLE)} runs can be re-run")

    def prune(self, batch: int = 500) -> int:
        """Delete ended runs (completed, cancelled) older than the retention, and events that
        started nothing; dead letters stay until redriven or purged. Returns runs deleted."""
        if self.retention is None:
            return 0
        self.ready()
        cutoff = self.storage.now() - self.retention
        total = 0
        while True:
            n = self.storage.runs_prune(cutoff, ("completed", "cancelled"), batch)
            total += n
            if n < batch:
                break
        while self.storage.events_prune(cutoff, batch) >= batch:
            pass
        return total

    def reconcile(self, idle: float = 600.0, batch: int = 100) -> int:
        """Repair fan-outs whose count is off (a safety net: counting is transactional): parents
        waiting over ``idle`` seconds are recounted from their children and resumed if all ended."""
        self.ready()
        return self.storage.fanouts_reconcile(self.storage.now() - idle, batch)

    def purge(self, run_ids: Sequence[str] | None) -> int:
        """Delete dead letters (all, or these failed runs) for good."""
        self.ready()
        if run_ids is None:
            total = 0
            while n := self.storage.runs_prune(float("inf"), ("failed",), 500):
                total += n
            return total
        for run_id in run_ids:
            row = self.storage.run_get(run_id)
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
            if row.status != "failed":
                raise InvalidState(f"run {run_id} is {row.status}; only dead letters (failed runs) are purged")
        return self.storage.runs_delete(run_ids)

    def dead_letters(self, limit: int) -> list[Run]:
        return self.list_runs(RunFilter(status="failed", limit=limit))

    def redrive_any(self, run_ids: Sequence[str]) -> list[str]:
        """Redrive those of these runs that are still dead letters; skip the rest."""
        self.ready()
        done = [run_id for run_id in run_ids if self.storage.run_requeue(run_id, ("failed",))]
        if done:
            self.storage.notify()
        return done

    def dead_letter_ids(self, function: str | None = None, limit: int | None = None) -> list[str]:
        """Ids of failed runs (of one function), newest first."""
        self.ready()
        ids: list[str] = []
        cursor = None
        while limit is None or len(ids) < limit:
            page = 1000 if limit is None else min(1000, limit - len(ids))
            rows = self.storage.runs_list(RunFilter(function=function, status="failed", before=cursor, limit=page))
            ids.extend(r.id for r in rows)
            if len(rows) < page:
                break
            cursor = rows[-1].id
        return ids

    def redrive(self, run_ids: Sequence[str] | None) -> list[str]:
        self.ready()
        if run_ids is None:
            ids = self.dead_letter_ids()
        else:
            ids = list(run_ids)
            self.check_dead_letters(ids)  # a bad id redrives none
        return self.redrive_any(ids)

    def check_dead_letters(self, run_ids: Sequence[str]) -> None:
        """Raise unless every one of these runs exists and is a dead letter (failed)."""
        for run_id in run_ids:
            row = self.storage.run_get(run_id)
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
            if row.status != "failed":
                raise InvalidState(f"run {run_id} is {row.status}, not failed; only dead letters are redriven")


class _BlobView:
    """What a running step may read (see ``StorageView``), with large outputs resolved."""

    def __init__(self, storage: Storage, blobs: BlobStore) -> None:
        self.storage = storage
        self.blobs = blobs

    def function_exists(self, function_id: str) -> bool:
        return self.storage.function_exists(function_id)

    def children_outputs(self, run_id: str, step_id: str, offset: int, limit: int) -> list[str | None]:
        return [self.blobs.resolve(o) for o in self.storage.children_outputs(run_id, step_id, offset, limit)]

    def child_error(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None:
        return self.storage.child_error(run_id, step_id, index)

