"""Prometheus metrics: counters fed by the event catalog, gauges read at scrape time.

Counters and the step histogram live in the process that does the work: they subscribe
to an app's :class:`~conveyor.observability.hooks.Hooks` (:func:`metrics_for`), so a
``conveyor dev`` process counts everything it runs, a ``conveyor server`` what its
intake accepts and its push dispatcher runs, and a ``conveyor worker`` (with
``--metrics-port``) its own runs. The gauges describe the database (queue depth, dead
letters, live workers), the same for every process: the server reads them when it is
scraped and hands them to :meth:`Metrics.render` as :class:`Readings` (this package
imports no storage). If that read fails the gauges are left out of the scrape and
``conveyor_scrape_errors_total`` goes up; a scrape never fails because the database is away.

Everything is registered in a :class:`~prometheus_client.CollectorRegistry` of
Conveyor's own, never the global one, and every name starts with ``conveyor_``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from conveyor.observability.hooks import (
    DeliveryFailed,
    EventsAccepted,
    EventsRejected,
    Hooks,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
)

log = logging.getLogger(__name__)
_OfFunction = RunStarted | RunCompleted | RunFailed | StepRetrying

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Step durations go from a millisecond to hours (a step may run long; it is leased, not timed out).
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                3600.0, float("inf"))


@dataclass(frozen=True, slots=True)
class Backlog:
    pool: str
    due: int  # jobs due now (leased ones included)
    oldest_age: float  # seconds since the oldest of them fell due (0 when none)


@dataclass(frozen=True, slots=True)
class Readings:
    """What the database says at scrape time (the server's callback builds it)."""

    backlog: list[Backlog] = field(default_factory=list)  # every known pool, idle ones at 0
    dead_letters: int = 0
    workers: dict[str, int] = field(default_factory=dict)  # pool -> live pull workers and push dispatchers
    endpoints: dict[str, int] = field(default_factory=dict)  # pool -> registered push endpoints


class Metrics:
    """Conveyor's metrics in a registry of their own; :meth:`attach` feeds them from hooks."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter("conveyor_runs_started", "Runs started (first claimed), by function",
                                    ["function"], registry=r)
        self.runs_completed = Counter("conveyor_runs_completed", "Runs completed, by function", ["function"],
                                      registry=r)
        self.runs_failed = Counter("conveyor_runs_failed", "Runs failed for good (dead letters), by function",
                                   ["function"], registry=r)
        self.step_duration = Histogram(
            "conveyor_step_duration_seconds",
            "Steps that ended in an invocation: seconds from the first attempt's start to the end",
            ["function", "kind"], buckets=STEP_BUCKETS, registry=r,
        )
        self.step_retries = Counter("conveyor_step_retries", "Failed step attempts that will be retried, by function",
                                    ["function"], registry=r)
        self.events_accepted = Counter("conveyor_events_accepted", "Events stored (sent in-process or over HTTP)",
                                       registry=r)
        self.events_rejected = Counter("conveyor_events_rejected",
                                       "Events refused by POST /api/v1/events, by error code", ["reason"], registry=r)
        self.delivery_errors = Counter("conveyor_push_delivery_errors",
                                       "Push deliveries of a run that produced nothing to commit, by pool and reason",
                                       ["pool", "reason"], registry=r)
        self.scrape_errors = Counter("conveyor_scrape_errors",
                                     "Scrapes whose database gauges could not be read", registry=r)
        if process:
            ProcessCollector(namespace="conveyor", registry=r)
        # label children, cached: .labels() costs more than the increment it precedes
        self._started: dict[str, Counter] = {}
        self._completed: dict[str, Counter] = {}
        self._failed: dict[str, Counter] = {}
        self._retries: dict[str, Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._last_warning = 0.0

    # ---- feeding ------------------------------------------------------------------------------

    def attach(self, hooks: Hooks) -> Callable[[], None]:
        """Subscribe to ``hooks``; returns a function that unsubscribes."""
        undo = [  # batches: one increment per function per claim or commit
            hooks.subscribe_batch(RunStarted, self._runs_started),
            hooks.subscribe_batch(RunCompleted, self._runs_completed),
            hooks.subscribe_batch(RunFailed, self._runs_failed),
            hooks.subscribe_batch(StepCompleted, self._steps_ended),
            hooks.subscribe_batch(StepFailed, self._steps_ended),
            hooks.subscribe_batch(StepRetrying, self._steps_retrying),
            hooks.subscribe(EventsAccepted, self._events_accepted),
            hooks.subscribe(EventsRejected, self._events_rejected),
            hooks.subscribe_batch(DeliveryFailed, self._delivery_failed),
        ]

        def detach() -> None:
            for fn in undo:
                fn()

        return detach

    def render(self, readings: Readings | None = None) -> bytes:
        """The metrics in Prometheus text format, with the database gauges of ``readings`` if given."""
        text = generate_latest(self.registry)
        if readings is not None:
            text += generate_latest(_DatabaseGauges(readings))
        return text

    def scrape_failed(self, error: BaseException) -> None:
        """The database gauges could not be read for this scrape: count it (and say so, at most once a minute)."""
        self.scrape_errors.inc()
        now = time.monotonic()
        if now - self._last_warning > 60.0:
            self._last_warning = now
            log.warning("metrics: the database gauges could not be read (%s: %s)", type(error).__name__, error)

    # ---- handlers (the emitter's thread; quick) ----------------------------------------------

    def _runs_started(self, events: Sequence[RunStarted]) -> None:
        _count(self._started, self.runs_started, events)

    def _runs_completed(self, events: Sequence[RunCompleted]) -> None:
        _count(self._completed, self.runs_completed, events)

    def _runs_failed(self, events: Sequence[RunFailed]) -> None:
        _count(self._failed, self.runs_failed, events)

    def _steps_retrying(self, events: Sequence[StepRetrying]) -> None:
        _count(self._retries, self.step_retries, events)

    def _steps_ended(self, events: Sequence[StepCompleted | StepFailed]) -> None:
        durations = self._durations
        for ev in events:
            if ev.duration is None:
                continue
            key = (ev.function, ev.kind)
            hist = durations.get(key)
            if hist is None:
                hist = durations[key] = self.step_duration.labels(*key)
            hist.observe(max(0.0, ev.duration))

    def _events_accepted(self, ev: EventsAccepted) -> None:
        self.events_accepted.inc(ev.count)

    def _events_rejected(self, ev: EventsRejected) -> None:
        self.events_rejected.labels(ev.reason).inc(ev.count)

    def _delivery_failed(self, events: Sequence[DeliveryFailed]) -> None:
        per: dict[tuple[str, str], int] = {}
        for ev in events:
            per[ev.pool, ev.reason] = per.get((ev.pool, ev.reason), 0) + 1
        for (pool, reason), n in per.items():
            self.delivery_errors.labels(pool, reason).inc(n)


def _count(cache: dict[str, Counter], parent: Counter, events: Sequence[_OfFunction]) -> None:
    """Increment ``parent``'s child of each function once, by its number of events."""
    per: dict[str, int] = {}
    for ev in events:
        per[ev.function] = per.get(ev.function, 0) + 1
    for function, n in per.items():
        child = cache.get(function)
        if child is None:
            child = cache[function] = parent.labels(function)
        child.inc(n)


class _DatabaseGauges(Collector):
    """The gauges of one scrape's readings of the database."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        depth = GaugeMetricFamily("conveyor_queue_depth", "Jobs due now, leased ones included, by pool",
                                  labels=["pool"])
        age = GaugeMetricFamily("conveyor_oldest_due_job_age_seconds",
                                "Seconds since the oldest due job of each pool fell due (0: none due)",
                                labels=["pool"])
        for b in r.backlog:
            depth.add_metric([b.pool], b.due)
            age.add_metric([b.pool], b.oldest_age)
        yield depth
        yield age
        yield GaugeMetricFamily("conveyor_dead_letters", "Runs that failed for good and were not redriven",
                                value=r.dead_letters)
        workers = GaugeMetricFamily("conveyor_workers", "Live processes serving each pool: pull workers and "
                                    "push dispatchers (a server with endpoints for it)", labels=["pool"])
        for pool, n in sorted(r.workers.items()):
            workers.add_metric([pool], n)
        yield workers
        endpoints = GaugeMetricFamily("conveyor_push_endpoints", "Registered push endpoints, by pool",
                                      labels=["pool"])
        for pool, n in sorted(r.endpoints.items()):
            endpoints.add_metric([pool], n)
        yield endpoints


_by_hooks: weakref.WeakKeyDictionary[Hooks, Metrics] = weakref.WeakKeyDictionary()
_by_hooks_lock = threading.Lock()


def metrics_for(hooks: Hooks) -> Metrics:
    """The metrics of the app whose hooks these are, attached on first use.

    A server and the worker it runs for ``conveyor dev`` share one engine, so they share
    one set of counters, however many times either asks."""
    with _by_hooks_lock:
        metrics = _by_hooks.get(hooks)
        if metrics is None:
            metrics = _by_hooks[hooks] = Metrics()
            metrics.attach(hooks)
        return metrics


def serve_http(metrics: Metrics, port: int, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """Serve ``GET /metrics`` of these metrics on ``host:port`` (0: a free port) from a daemon
    thread (a worker's ``--metrics-port``); returns the bound port and a function that stops it."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5.0)

    return int(server.server_port), stop
