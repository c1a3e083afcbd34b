"""The push dispatcher: claims due jobs for registered endpoints, sends them, commits the answers.

It runs inside ``conveyor server`` and holds no user code. Per endpoint (a URL that serves
one pool's runs of some functions) it claims due jobs while fewer than ``concurrency``
invocations are in flight there, sends them in signed batches (:mod:`conveyor.push`),
and commits each answer through the same engine commit as a pull worker (fenced by the
lease token, large outputs offloaded). A run that yields after a checkpoint is sent again
at once with its new memo, keeping its lease, until it suspends, ends, or spends the
engine's time budget.

A delivery that fails (connection refused or reset, timeout, non-200, bad signature,
malformed body) commits nothing: the job is released and due again after an exponential
backoff (capped at 60 s); after ``max_failures`` consecutive failures the run fails with
``DeliveryFailed`` (a dead letter that can be redriven).

Threads: the fetcher (claims, sleeps on the storage's wake-up channel), one asyncio loop
(HTTP), the committer (group commits), the heartbeat (extends leases in flight, and tells
the workers' registry every few seconds that this dispatcher serves the endpoints' pools).

Each failed delivery of a run is logged with its ``run_id`` and emitted as
``delivery.failed`` (with a ``reason`` such as ``timeout`` or ``http_status``) into the
engine's hooks, where ``conveyor_push_delivery_errors_total`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.ids import new_id
from conveyor.observability.hooks import DeliveryFailed
from conveyor.push.protocol import PushResult
from conveyor.push.signing import check_keys
from conveyor.records import Failed, MemoStep, Suspended
from conveyor.storage.base import ClaimedJob, JobResult, WorkerRow
from conveyor.types import Backoff
from conveyor.worker.committer import Committer
from conveyor.worker.delivery import Courier, DeliveryError, EndpointState, FailureCounter, Flight, GroupAck
from conveyor.worker.http import HttpClient
from conveyor.worker.presence import Presence

log = logging.getLogger(__name__)
DEFAULT_RETRY_BACKOFF = Backoff(base=1.0, cap=60.0, factor=2.0, jitter=0.5)


class Dispatcher:
    """Push delivery for every registered endpoint of the engine's database."""

    def __init__(
        self,
        engine: Engine,
        *,
        signing_key: str,
        fallback_key: str | None = None,
        view_url: str | None = None,
        batch: int = 32,
        max_failures: int = 20,
        retry_backoff: Backoff = DEFAULT_RETRY_BACKOFF,
        refresh: float = 2.0,
        poll_interval: float = 1.0,
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self._keys = check_keys([signing_key, fallback_key])
        self.view_url = view_url
        self.batch = batch
        self.max_failures = max_failures
        self.refresh = refresh
        self.poll_interval = poll_interval
        self.name = name or f"push:{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self._failures = FailureCounter(retry_backoff)
        self._endpoints: dict[str, EndpointState] = {}
        self._on_failure: set[str] = set()
        self._inflight: dict[str, Flight] = {}  # run id -> flight, until its final commit
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._committer = Committer(engine.commit, self._committed)
        self._loop: asyncio.AbstractEventLoop  # made by start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: HttpClient | None = None
        self._courier: Courier
        self._listener: Any = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._db_ok = True
        self._refreshed = 0.0
        self._pools: tuple[str, ...] | None = None  # the pools of the endpoints, as last told the registry
        self._started_at = 0.0
        self.presence = Presence(engine, self.name, self._registry_row)  # the dashboard's list of workers

    @property
    def ready(self) -> bool:
        """True while the dispatcher is running and its database answers."""
        return self._started and not self._stopping.is_set() and self._db_ok

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Dispatcher:
        if self._started:
            return self
        self._started = True
        self._started_at = time.time()
        self._loop = asyncio.new_event_loop()
        self.engine.ready()
        self._listener = self.engine.storage.listener()
        self._committer.start()
        self._client = HttpClient()
        self._courier = Courier(self._client, self._keys, self.view_url)
        for target, tname in ((self._loop.run_forever, "conveyor-push-loop"), (self._fetch_loop, "conveyor-push-fetch"),
                              (self._heartbeat_loop, "conveyor-push-heartbeat")):
            t = threading.Thread(target=target, name=tname, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("push dispatcher %s started", self.name)
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let deliveries in flight end for ``grace`` seconds; release the rest."""
        if not self._started or self._stopped.is_set():
            return
        self._stopping.set()
        self._listener.poke()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    break
            time.sleep(0.01)
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        with self._lock:
            leftover = list(self._inflight.values())
            for flight in leftover:
                flight.lost = True
        for flight in leftover:
            job = flight.job
            self._committer.submit(JobResult(job.run_id, job.token, job.function_id, release=True))
        self._committer.stop(timeout=max(5.0, grace))
        self._stopped.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join(timeout=2.0)
        if not self._loop.is_running():
            self._loop.close()
        self._listener.close()
        self.presence.leave()
        if leftover:
            log.warning("push dispatcher %s released %d unfinished runs", self.name, len(leftover))

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # ---- claiming (the fetcher thread) --------------------------------------------------------

    def _fetch_loop(self) -> None:
        backoff = 0.05
        rotation = 0
        while not self._stopping.is_set():
            try:
                if time.monotonic() - self._refreshed >= self.refresh:
                    self._refresh()
                rotation += 1
                full, idle = self._claim_round(rotation)
                timeout = 0.0 if full else self._idle_timeout(idle)
                self._database(True)
                backoff = 0.05
            except Exception as exc:
                self._database(False, exc)
                timeout, backoff = backoff, min(backoff * 2, 5.0)
            if timeout:
                self._listener.wait(min(timeout, self.refresh))

    def _refresh(self) -> None:
        storage = self.engine.storage
        specs = {e.url: e for e in storage.endpoints_list()}
        self._on_failure = {r.spec.id for r in storage.functions_list() if r.spec.has_on_failure}
        with self._lock:
            for url, state in self._endpoints.items():
                if url not in specs:
                    state.removed = True
            for url, spec in specs.items():
                if url in self._endpoints:
                    self._endpoints[url].update(spec)
                else:
                    self._endpoints[url] = EndpointState(spec)
                    log.info("push endpoint %s serves pool %s", url, spec.pool)
            self._endpoints = {u: s for u, s in self._endpoints.items() if not s.removed or s.inflight}
            pools = tuple(sorted({s.spec.pool for s in self._endpoints.values() if not s.removed}))
        self._failures.prune()
        self._refreshed = time.monotonic()
        if pools != self._pools:  # the registry hears of a change at once, not at the next beat
            self._pools = pools
            self.presence.announce()

    def _registry_row(self) -> WorkerRow:
        """This dispatcher as the workers' registry sees it: serving its endpoints' pools."""
        with self._lock:
            slots = sum(s.spec.concurrency for s in self._endpoints.values() if not s.removed)
        return WorkerRow(self.name, "dispatcher", socket.gethostname(), os.getpid(), self._pools or (), slots,
                         self._started_at)

    def _claim_round(self, rotation: int) -> tuple[bool, list[EndpointState]]:
        """Claim for every endpoint with free slots; (whether one got all it asked, those idle)."""
        with self._lock:
            states = list(self._endpoints.values())
        if states:
            k = rotation % len(states)
            states = states[k:] + states[:k]
        full, idle = False, []
        for state in states:
            with self._lock:
                free = state.free()
            if free <= 0 or self._stopping.is_set():
                continue
            want = min(free, 4 * self.batch)
            jobs = self.engine.claim(self.name, [state.spec.pool], want, functions=state.spec.functions)
            self._launch(state, jobs)
            if len(jobs) == want:
                full = True
            else:
                idle.append(state)
        return full, idle

    def _launch(self, state: EndpointState, jobs: list[ClaimedJob]) -> None:
        flights = []
        for job in jobs:
            with self._lock:
                if job.run_id in self._inflight:  # our own lease expired while it was in flight here
                    self._inflight[job.run_id].lost = True
                    self._committer.submit(JobResult(job.run_id, job.token, job.function_id, release=True))
                    continue
            try:
                flight = Flight(job, self.engine.invocation_input(job), state)
            except Exception as exc:  # e.g. a memo output's blob is missing: try again later
                log.error("cannot prepare run %s for push: %s", job.run_id, exc,
                          extra={"function": job.function_id, "run_id": job.run_id})
                self._emit_failed(state, [job], "prepare", str(exc))
                self._committer.submit(JobResult(job.run_id, job.token, job.function_id, release=True,
                                                 delay=self._failures.delay(self._failures.failed(job.run_id))))
                continue
            with self._lock:
                self._inflight[job.run_id] = flight
                state.inflight += 1
            flights.append(flight)
        if flights:
            self._loop.call_soon_threadsafe(self._enqueue, flights)

    def _idle_timeout(self, idle: list[EndpointState]) -> float:
        timeout = self.poll_interval
        for state in idle:
            due = self.engine.next_due([state.spec.pool], state.spec.functions)
            if due is not None:
                timeout = min(timeout, max(0.001, due - time.time()))
        return timeout

    def _database(self, ok: bool, error: BaseException | None = None) -> None:
        if ok != self._db_ok:
            if ok:
                log.warning("push dispatcher %s: the database answers again", self.name)
            else:
                log.error("push dispatcher %s: the database is unreachable (%s); retrying", self.name, error)
        self._db_ok = ok

    # ---- delivering (the event loop) ----------------------------------------------------------

    def _enqueue(self, flights: Sequence[Flight]) -> None:
        for flight in flights:
            state = flight.endpoint
            state.queue.append(flight)
            if not state.flush_scheduled:  # everything queued in this loop iteration goes together
                state.flush_scheduled = True
                self._loop.call_soon(self._flush, state)

    def _flush(self, state: EndpointState) -> None:
        state.flush_scheduled = False
        size = self.batch
        if state.bucket is not None:  # a rated endpoint: no request carries more than 0.1 s of starts
            size = max(1, min(size, int(state.bucket.rate / 10)))
        while state.queue:
            batch, state.queue = state.queue[:size], state.queue[size:]
            task = self._loop.create_task(self._deliver(state, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, state: EndpointState, flights: list[Flight]) -> None:
        try:
            if state.bucket is not None:
                await state.bucket.acquire(len(flights))
            results = await self._courier.send(state, flights)
        except DeliveryError as exc:
            self._delivery_failed(state, flights, exc.reason, str(exc))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not lose the jobs: they are released
            log.exception("push delivery to %s crashed", state.url)
            self._delivery_failed(state, flights, "crashed", f"{type(exc).__name__}: {exc}")
            return
        await self._answered(state, flights, results)

    async def _answered(self, state: EndpointState, flights: list[Flight], results: dict[str, PushResult]) -> None:
        good: list[tuple[Flight, PushResult]] = []
        for flight in flights:
            res = results.get(flight.job.run_id)
            why = "no result for this run" if res is None else _error_text(res.error)
            if res is None or why:
                self._delivery_failed(state, [flight], "endpoint_error", f"the endpoint could not run it ({why})")
            else:
                good.append((flight, res))
        again = [(f, [_memo_step(w) for w in r.writes]) for f, r in good if self._continues(f, r)]
        group = GroupAck(self._loop, len(again))
        parts = iter(range(len(again)))
        continuing = {id(f) for f, _ in again}
        for flight, res in good:
            self._failures.succeeded(flight.job.run_id)
            cont = id(flight) in continuing
            result = self.engine.job_result(flight.job, res.writes, None if cont else res.outcome, res.logs,
                                            on_failure=flight.job.function_id in self._on_failure)
            if cont:
                result.ack = group.part(next(parts))
            self._committer.submit(result)
        self._release_slot(state, len(good) - len(again))
        if not again:
            return
        # the checkpoints of one answer commit together: send the runs on together, as one batch
        oks = await group.future
        onward, done = [], 0
        for (flight, memo), ok in zip(again, oks, strict=True):
            if ok and not flight.lost and not self._stopping.is_set():
                flight.input.memo.update((m.id, m) for m in memo)
                onward.append(flight)
                continue
            if ok and not flight.lost:  # stopping: give the run back, it is due at once
                job = flight.job
                self._committer.submit(JobResult(job.run_id, job.token, job.function_id, release=True))
            else:
                self._forget(flight)
            done += 1
        self._release_slot(state, done)
        self._enqueue(onward)

    def _continues(self, flight: Flight, res: PushResult) -> bool:
        """Send this run again at once (it yielded after a checkpoint, and has budget left)?"""
        out = res.outcome
        return (isinstance(out, Suspended) and out.reason == "yield" and not flight.lost
                and not self._stopping.is_set() and time.monotonic() - flight.started < self.engine.budget)

    def _delivery_failed(self, state: EndpointState, flights: list[Flight], kind: str, reason: str) -> None:
        """Nothing to commit for these runs: release each (due again after a backoff), or fail it
        with ``DeliveryFailed`` after ``max_failures`` in a row. ``kind`` classifies ``reason``."""
        self._report_failure(state, flights, kind, reason)
        for flight in flights:
            job = flight.job
            n = self._failures.failed(job.run_id)
            if n >= self.max_failures:
                self._failures.succeeded(job.run_id)
                error = {"step_id": None, "type": "DeliveryFailed",
                         "message": f"{n} deliveries in a row to {state.url} failed; the last: {reason}"}
                result = JobResult(job.run_id, job.token, job.function_id, outcome=Failed(error),
                                   on_failure=job.function_id in self._on_failure)
            else:
                result = JobResult(job.run_id, job.token, job.function_id, release=True,
                                   delay=self._failures.delay(n))
            self._committer.submit(result)
        self._release_slot(state, len(flights))

    def _report_failure(self, state: EndpointState, flights: list[Flight], kind: str, reason: str) -> None:
        """One log line per failed delivery (not per run in it: an endpoint that is down would
        flood the log), with the run's fields when it carried one; one emission for all its runs."""
        jobs = [f.job for f in flights]
        fields: dict[str, Any] = {"pool": state.spec.pool, "url": state.url}
        if len(jobs) == 1:
            fields.update(function=jobs[0].function_id, run_id=jobs[0].run_id)
        shown = ", ".join(j.run_id for j in jobs[:3]) + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
        log.warning("push of %d run(s) to %s failed (%s): %s; runs %s", len(jobs), state.url, kind, reason, shown,
                    extra=fields)
        self._emit_failed(state, jobs, kind, reason)

    def _emit_failed(self, state: EndpointState, jobs: list[ClaimedJob], kind: str, reason: str) -> None:
        hooks = self.engine.hooks
        if hooks.wants(DeliveryFailed):
            hooks.emit_many([DeliveryFailed(j.function_id, j.run_id, state.spec.pool, state.url, kind, reason)
                             for j in jobs])

    def _release_slot(self, state: EndpointState, n: int = 1) -> None:
        if n:
            with self._lock:
                state.inflight -= n
            self._listener.poke()

    def _forget(self, flight: Flight) -> None:
        with self._lock:
            if self._inflight.get(flight.job.run_id) is flight:
                del self._inflight[flight.job.run_id]

    # ---- after commit (the committer thread) --------------------------------------------------

    def _committed(self, batch: Sequence[JobResult], accepted: list[bool]) -> None:
        spawned = False
        with self._lock:
            for res, ok in zip(batch, accepted, strict=True):
                if res.ack is not None and not res.ack.done():  # (cancelled: the dispatcher is stopping)
                    res.ack.set_result(ok)
                flight = self._inflight.get(res.run_id)
                if flight is not None and flight.job.token == res.token:
                    if not ok:
                        flight.lost = True
                    if res.outcome is not None or res.release:
                        del self._inflight[res.run_id]
                spawned = spawned or (ok and any(w.children or w.events for w in res.steps))
        if spawned:
            self.engine.storage.notify()

    # ---- leases -------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.engine.lease / 3)
        while not self._stopped.wait(min(interval, self.presence.interval)):
            if not self._stopping.is_set() and self._pools is not None:
                self.presence.beat_if_due()
            with self._lock:
                leases = [(r, f.job.token) for r, f in self._inflight.items() if not f.lost]
            if not leases:
                continue
            try:
                lost = self.engine.heartbeat(leases)
            except Exception:
                log.warning("push dispatcher %s: heartbeat failed", self.name, exc_info=True)
                continue
            if lost:
                with self._lock:
                    for run_id in lost:
                        if run_id in self._inflight:
                            self._inflight[run_id].lost = True
                for run_id in lost:
                    log.warning("push dispatcher %s lost the lease of run %s (it was cancelled, or the database "
                                "was away); what its endpoint reports is discarded", self.name, run_id,
                                extra={"run_id": run_id})


def _error_text(error: dict[str, Any] | None) -> str:
    return "" if error is None else f"{error.get('type')}: {error.get('message')}"


def _memo_step(w: Any) -> MemoStep:
    return MemoStep(w.id, w.kind, w.status, w.attempts, w.output, w.error, w.wake_at, w.seq, w.started_at,
                    w.children_total, w.children_created)
