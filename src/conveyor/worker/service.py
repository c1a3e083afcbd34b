"""The pull worker: claims due jobs, runs them, checkpoints them, holds their leases.

Threads:

* the fetcher claims jobs in batches while there is free capacity, and sleeps on
  the storage's wake-up channel (or until the next job is due) when there is none;
* ``def`` functions run on a thread pool; ``async def`` functions on one event loop;
* the committer applies finished steps and outcomes in grouped transactions;
* the heartbeat extends the leases of everything in flight, so a step of any length
  is never claimed twice while its worker lives, and reports leases that were lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.executor.invocation import Invocation, InvocationResult
from conveyor.executor.ops import LeaseLost
from conveyor.ids import new_id
from conveyor.records import StepWrite
from conveyor.scheduler.maintenance import run_maintenance
from conveyor.scheduler.ticker import CronTicker
from conveyor.storage.base import ClaimedJob, JobResult, WorkerRow
from conveyor.worker.committer import Committer
from conveyor.worker.presence import Presence
from conveyor.worker.threads import DaemonPool

log = logging.getLogger(__name__)


class Worker:
    """Serves the given pools (default: every pool of the app's functions)."""

    def __init__(
        self,
        engine: Engine,
        *,
        pools: Sequence[str] | None = None,
        concurrency: int = 32,
        poll_interval: float = 1.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        self.engine = engine
        self._pools = list(pools) if pools else None
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self._started_at = 0.0
        self.presence = Presence(engine, self.name, self._registry_row)  # the dashboard's list of workers
        self._inflight: dict[str, int] = {}  # run_id -> lease token, until the final commit lands
        self._executing = 0  # invocations running now: what the concurrency limit counts
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: DaemonPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Any = None
        self._committer = Committer(engine.commit, self._committed)
        self._started = False
        self._db_ok = True
        self.maintenance_interval = 300.0
        self.housekeeping_interval = 15.0

    @property
    def ready(self) -> bool:
        """True while the worker is serving and its database answers."""
        return self._started and not self._stopping.is_set() and self._db_ok

    def _database(self, ok: bool, error: BaseException | None = None) -> None:
        if ok != self._db_ok:
            if ok:
                log.warning("worker %s: the database answers again; resuming", self.name)
            else:
                log.error("worker %s: the database is unreachable (%s); retrying with backoff", self.name, error)
        self._db_ok = ok

    @property
    def pools(self) -> list[str]:
        return self._pools or self.engine.registry.pools()

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Worker:
        """Start serving in background threads; returns at once."""
        if self._started:
            return self
        self._started = True
        self.engine.ready()
        self._started_at = time.time()
        self.presence.announce()
        self._listener = self.engine.storage.listener()
        self._pool = DaemonPool(self.concurrency, "conveyor-run")
        self._committer.start()
        loops = ((self._fetch_loop, "conveyor-fetch"), (self._heartbeat_loop, "conveyor-heartbeat"),
                 (self._maintenance_loop, "conveyor-maintenance"), (self._cron_loop, "conveyor-cron"))
        for target, tname in loops:
            t = threading.Thread(target=target, name=tname, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("worker %s serving pools %s", self.name, ", ".join(self.pools))
        return self

    def run(self, grace: float = 30.0, *, stop: threading.Event | None = None) -> None:
        """Serve until SIGTERM or SIGINT (or ``stop`` is set), then stop cleanly within ``grace``
        seconds. A ``stop`` already set returns at once: a signal that came in before the
        worker started was still a request to stop."""
        stop_requested = stop if stop is not None else threading.Event()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: stop_requested.set())
        try:
            if stop_requested.is_set():
                return
            self.start()
            while not stop_requested.wait(0.5):
                if self._stopped.is_set():
                    break
        finally:
            self.stop(grace)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let running invocations finish for ``grace`` seconds, give back the rest."""
        if not self._started or self._stopped.is_set():
            return
        self._stopping.set()
        if self._listener is not None:
            self._listener.poke()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    break
            time.sleep(0.01)
        with self._lock:
            leftover = list(self._inflight.items())
            self._lost.update(self._inflight)
        for run_id, token in leftover:  # still running past the grace: hand them back
            self._committer.submit(JobResult(run_id, token, "", release=True))
        self._committer.stop(timeout=max(5.0, grace))
        self._stopped.set()
        for t in self._threads:
            t.join(timeout=2.0)
        if self._pool is not None:
            self._pool.shutdown()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._listener is not None:
            self._listener.close()
        self.presence.leave()
        if leftover:
            log.warning("worker %s released %d unfinished runs", self.name, len(leftover))

    # ---- fetching -----------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                got, asked = self._fetch_once()
                backoff = 0.05
                self._database(True)
            except Exception as exc:
                self._database(False, exc)
                log.debug("claiming jobs failed; retrying in %.2fs", backoff, exc_info=True)
                self._listener.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if asked and got == asked:
                continue  # there may be more due right now
            timeout = self.poll_interval
            if asked:  # capacity left and nothing more due: sleep until the next due job
                try:
                    due = self.engine.next_due(self.pools)
                except Exception:
                    due = None
                if due is not None:
                    timeout = min(timeout, max(0.0, due - time.time()))
            self._listener.wait(timeout)

    def _fetch_once(self) -> tuple[int, int]:
        with self._lock:
            busy = self._executing
        if 0 < self.concurrency - busy < self.concurrency // 4:
            # a few slots free while many runs execute: let more free up (briefly) and
            # claim them in one batch rather than one claim per finishing run
            self._listener.wait(0.002)
        with self._lock:
            # slots free as invocations return; results not yet committed are bounded too, so
            # a worker that dies loses at most that many uncommitted steps
            free = min(self.concurrency - self._executing, 2 * self.concurrency - len(self._inflight))
        if free <= 0:
            return 0, 0
        jobs = self.engine.claim(self.name, self.pools, free)
        fresh = []
        with self._lock:
            for job in jobs:
                if job.run_id in self._inflight:
                    # our own lease on it expired (the database was away) while it still runs
                    # here: the running invocation is fenced out now; give this claim back
                    # rather than run the same step twice at once
                    self._lost.add(job.run_id)
                    self._committer.submit(JobResult(job.run_id, job.token, job.function_id, release=True))
                    continue
                self._inflight[job.run_id] = job.token
                fresh.append(job)
            self._executing += len(fresh)
        for job in fresh:
            self._dispatch(job)
        return len(jobs), free

    def _dispatch(self, job: ClaimedJob) -> None:
        prepared = self.engine.prepare(job, self._sink(job))
        if isinstance(prepared, JobResult):
            self._done_executing()
            self._committer.submit(prepared)
        elif prepared.is_async:
            asyncio.run_coroutine_threadsafe(self._run_async(job, prepared), self._event_loop())
        else:
            assert self._pool is not None
            self._pool.submit(self._run_sync, job, prepared)

    def _sink(self, job: ClaimedJob) -> Any:
        def checkpoint(write: StepWrite) -> Future[bool]:
            if job.run_id in self._lost:
                raise LeaseLost(job.run_id)
            ack: Future[bool] = Future()
            self._committer.submit(JobResult(job.run_id, job.token, job.function_id, steps=[write], ack=ack))
            return ack

        return checkpoint

    def _run_sync(self, job: ClaimedJob, inv: Invocation) -> None:
        try:
            result = inv.run()
        except BaseException as exc:
            return self._finished(job, None, exc, inv)
        self._finished(job, result, None, inv)

    async def _run_async(self, job: ClaimedJob, inv: Invocation) -> None:
        try:
            result = await inv.arun()
        except BaseException as exc:
            return self._finished(job, None, exc, inv)
        self._finished(job, result, None, inv)

    def _finished(
        self, job: ClaimedJob, result: InvocationResult | None, error: BaseException | None, inv: Invocation,
    ) -> None:
        """An invocation returned: hand its result to the committer, or drop the job if it was lost."""
        if result is None:
            fields = inv.log_fields()
            if isinstance(error, LeaseLost):
                log.info("run %s: invocation stopped, its lease was lost (cancelled, or taken over after a stall)",
                         job.run_id, extra=fields)
            else:
                log.error("invocation of run %s crashed", job.run_id, exc_info=error, extra=fields)
            return self._forget(job.run_id)
        self._done_executing()
        self._committer.submit(self.engine.result_of(job, result))

    def _done_executing(self) -> None:
        with self._lock:
            self._executing -= 1
        self._listener.poke()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="conveyor-async", daemon=True)
            t.start()
            self._loop = loop
        return self._loop

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._inflight.pop(run_id, None)
            self._lost.discard(run_id)
            self._executing -= 1
        self._listener.poke()

    # ---- after commit -------------------------------------------------------------------------

    def _committed(self, batch: Sequence[JobResult], accepted: list[bool]) -> None:
        finished = False
        spawned = False
        with self._lock:
            for res, ok in zip(batch, accepted, strict=True):
                if res.ack is not None:
                    res.ack.set_result(ok)
                final = res.outcome is not None or res.release
                ours = self._inflight.get(res.run_id) == res.token  # (not a claim given back at once)
                if not ok and ours:
                    self._lost.add(res.run_id)
                if final and ours:
                    self._inflight.pop(res.run_id, None)
                    self._lost.discard(res.run_id)
                    finished = True
                if not ok:
                    continue
                if any(w.children or w.events for w in res.steps):
                    spawned = True
        if spawned:
            self.engine.storage.notify()
        elif finished:
            self._listener.poke()

    # ---- leases -------------------------------------------------------------------------------

    def _cron_loop(self) -> None:
        """Fire the app's cron schedules (every worker runs this; each slot fires once)."""
        CronTicker(self.engine, catchup=self.engine.cron_catchup).run(self._stopping)

    def _maintenance_loop(self) -> None:
        run_maintenance(self.engine, self._stopping, self.housekeeping_interval, self.maintenance_interval)

    def _registry_row(self) -> WorkerRow:
        return WorkerRow(self.name, "worker", socket.gethostname(), os.getpid(), tuple(self.pools), self.concurrency,
                         self._started_at)

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.engine.lease / 3)
        while not self._stopped.wait(min(interval, self.presence.interval)):
            if not self._stopping.is_set():
                self.presence.beat_if_due()
            with self._lock:
                leases = [(r, t) for r, t in self._inflight.items() if r not in self._lost]
            if not leases:
                continue
            try:
                lost = self.engine.heartbeat(leases)
            except Exception:
                log.exception("heartbeat failed")
                continue
            if lost:
                with self._lock:
                    self._lost.update(r for r in lost if r in self._inflight)
                for run_id in lost:
                    log.warning("worker %s lost the lease of run %s (it stalled, or the run was cancelled); "
                                "what it still reports is discarded", self.name, run_id, extra={"run_id": run_id})
