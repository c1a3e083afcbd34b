"""The engine: the only writer of run state.

Workers, the CLI and the SDK call it; it turns their requests and the executor's
reports into storage verbs, and storage applies them atomically and fenced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from conveyor.engine.registry import Registry
from conveyor.errors import InvalidInput, InvalidState, NotFound, StepError
from conveyor.executor import codec
from conveyor.executor.invocation import Invocation, InvocationResult, Sink
from conveyor.ids import new_id
from conveyor.records import Completed, Failed, NewEvent, StepWrite
from conveyor.storage.base import ClaimedJob, DirectRun, JobResult, RunFilter, RunRow, Storage
from conveyor.storage.blobs import BlobStore
from conveyor.types import Backoff, Event, Progress, Run, RunStatus, StepRecord, utc_from_ts

RESERVED_PREFIX = "conveyor/"
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
    ) -> None:
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

    def make_event(self, name: Any, data: Any, event_id: Any) -> NewEvent:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("an event name must be a non-empty string")
        if name.startswith(RESERVED_PREFIX):
            raise InvalidInput(f"event names starting with {RESERVED_PREFIX!r} are reserved for Conveyor")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidInput(f"event data must be a JSON object (a dict), got {type(data).__name__}")
        if event_id is None:
            event_id = new_id()
        elif not isinstance(event_id, str) or not event_id:
            raise InvalidInput("an event id must be a non-empty string")
        return NewEvent(event_id, name, codec.dumps(data, what=f"the data of event {name!r}"), time.time())

    def send(self, events: Sequence[NewEvent]) -> list[str]:
        self.ready()
        self.storage.events_send(events)
        self.storage.notify()
        return [e.id for e in events]

    def start_run(self, function_id: str, data: Any) -> str:
        self.ready()
        if self.registry.get(function_id) is None:
            raise NotFound(f"unknown function {function_id!r}")
        run_id = new_id()
        payload = codec.dumps({} if data is None else data, what=f"the data for {function_id!r}")
        event = NewEvent(run_id, "conveyor/invoke", payload, time.time())
        self.storage.runs_start([DirectRun(run_id, function_id, event)])
        self.storage.notify()
        return run_id

    # ---- execution ----------------------------------------------------------------------------

    def claim(self, worker: str, pools: Sequence[str], limit: int, lease: float | None = None) -> list[ClaimedJob]:
        self.ready()
        before = time.time()
        jobs = self.storage.jobs_claim(worker, pools, self.registry.ids(), limit, lease or self.lease)
        for job in jobs:  # the database clock minus ours, measured from before the claim: never early
            job.skew = job.db_now - before if job.db_now else 0.0
        return jobs

    def next_due(self, pools: Sequence[str]) -> float | None:
        return self.storage.jobs_next_due(pools, self.registry.ids())

    def prepare(self, job: ClaimedJob, sink: Sink) -> Invocation | JobResult:
        """The invocation that advances this job, or at once the result if it cannot run."""
        definition = self.registry.get(job.function_id)
        if definition is None:
            return JobResult(job.run_id, job.token, job.function_id, outcome=Failed({
                "step_id": None, "type": "NotFound",
                "message": f"function {job.function_id!r} is not registered in this worker's app",
            }))
        data = codec.loads(job.event_data)
        event = Event(name=job.event_name, data=data, id=job.event_id, ts=utc_from_ts(job.event_ts))
        extra: tuple[Any, ...] = ()
        if definition.failure_handler_of is not None:
            original = self.storage.event_get(data.get("event_id", ""))
            if original is not None:
                event = Event(original.name, codec.loads(original.data), original.id, utc_from_ts(original.ts))
            extra = (StepError.from_dict(data.get("error") or {}),)
        skew = job.skew  # timers run on the database's clock
        for m in job.memo.values():
            m.output = self.blobs.resolve(m.output)
        blobs = self.blobs

        def offloading_sink(write: StepWrite) -> Any:
            write.output = blobs.offload(write.output)
            return sink(write)

        return Invocation(
            fn=definition.fn, function_id=job.function_id, run_id=job.run_id, event=event,
            clock=(lambda: time.time() + skew) if skew else time.time,
            memo=job.memo, retries=definition.spec.retries, backoff=definition.backoff or self.backoff,
            sink=offloading_sink, new_id=new_id, budget=self.budget, extra_args=extra,
            view=self.view, known_functions=self.registry.known(),
        )

    def result_of(self, job: ClaimedJob, result: InvocationResult) -> JobResult:
        definition = self.registry.get(job.function_id)
        if result.final_write is not None:
            result.final_write.output = self.blobs.offload(result.final_write.output)
        if isinstance(result.outcome, Completed):
            result.outcome.output = self.blobs.offload(result.outcome.output) or "null"
        return JobResult(
            job.run_id, job.token, job.function_id,
            steps=[result.final_write] if result.final_write else [],
            outcome=result.outcome, logs=result.logs,
            on_failure=bool(definition and definition.spec.has_on_failure),
        )

    def commit(self, results: Sequence[JobResult]) -> list[bool]:
        return self.storage.jobs_commit(results)

    def heartbeat(self, leases: Sequence[tuple[str, int]], lease: float | None = None) -> list[str]:
        return self.storage.jobs_heartbeat(leases, lease or self.lease)

    # ---- inspection ---------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        self.ready()
        row = self.storage.run_get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return self._run(row, with_steps=True)

    def list_runs(self, flt: RunFilter) -> list[Run]:
        self.ready()
        if flt.status is not None and flt.status not in RUN_STATUSES:
            raise InvalidInput(f"unknown run status {flt.status!r}")
        if not isinstance(flt.limit, int) or flt.limit < 1:
            raise InvalidInput("limit must be a positive integer")
        return [self._run(r, with_steps=True) for r in self.storage.runs_list(flt)]

    def _run(self, row: RunRow, *, with_steps: bool) -> Run:
        steps = []
        if with_steps:
            steps = [
                StepRecord(
                    s.id, s.kind, s.status, s.attempts, codec.loads(self.blobs.resolve(s.output)), codec.loads(s.error),
                    utc_from_ts(s.started_at), utc_from_ts(s.ended_at),
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

    def requeue(self, run_id: str, from_statuses: Sequence[str]) -> None:
        self.ready()
        if self.storage.run_requeue(run_id, from_statuses):
            self.storage.notify()
            return
        row = self.storage.run_get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        raise InvalidState(
            f"run {run_id} is {row.status}; only {', '.join(from_statuses)} runs can be re-run"
        )

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

    def redrive(self, run_ids: Sequence[str] | None) -> list[str]:
        self.ready()
        if run_ids is None:
            ids: list[str] = []
            cursor = None
            while True:
                rows = self.storage.runs_list(RunFilter(status="failed", before=cursor, limit=1000))
                if not rows:
                    break
                ids.extend(r.id for r in rows)
                cursor = rows[-1].id
        else:
            ids = list(run_ids)
            for run_id in ids:  # check them all first: a bad id redrives none
                row = self.storage.run_get(run_id)
                if row is None:
                    raise NotFound(f"no run with id {run_id!r}")
                if row.status != "failed":
                    raise InvalidState(f"run {run_id} is {row.status}, not failed; only dead letters are redriven")
        done = [run_id for run_id in ids if self.storage.run_requeue(run_id, ("failed",))]
        if done:
            self.storage.notify()
        return done


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
