"""Storage verbs behind the dashboard and /metrics, on every backend: trace context on
events, first claims, time windows of runs, per-function stats, and the worker registry."""

from __future__ import annotations

import json
import time

from conveyor.records import Completed, Failed, NewEvent
from conveyor.storage.base import JobResult, RunFilter, Storage, WorkerRow

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def ev(name: str, id: str, trace: str | None = None) -> NewEvent:
    return NewEvent(id, name, json.dumps({}), time.time(), trace)


def claim(s: Storage, limit: int = 10):
    return s.jobs_claim("w1", ("default",), ["one"], limit, 30.0)


def test_an_events_trace_context_reaches_the_claimed_job(backend: Storage) -> None:
    backend.events_send([ev("go", "traced", TRACE), ev("go", "plain")])
    jobs = {j.event_id: j for j in claim(backend)}
    assert jobs["traced"].trace == TRACE
    assert jobs["plain"].trace is None


def test_only_a_runs_first_claim_is_marked_first(backend: Storage) -> None:
    backend.events_send([ev("go", "a")])
    [job] = claim(backend)
    assert job.first
    # give the job back: claimed again, it is not the run's start any more
    assert backend.jobs_commit([JobResult(job.run_id, job.token, job.function_id, release=True)]) == [True]
    [again] = claim(backend)
    assert again.run_id == job.run_id and not again.first


def next_millisecond() -> float:
    """Wait for the clock to enter a new millisecond (ids carry milliseconds); return it."""
    start = int(time.time() * 1000)
    while int(time.time() * 1000) == start:
        pass
    return time.time()


def test_runs_list_by_time_window(backend: Storage) -> None:
    backend.events_send([ev("go", "old")])
    [old] = backend.runs_list(RunFilter(event_id="old"))
    middle = next_millisecond()
    next_millisecond()
    backend.events_send([ev("go", "new")])
    [new] = backend.runs_list(RunFilter(event_id="new"))
    for flt in (RunFilter(), RunFilter(function="one"), RunFilter(status="queued")):
        since = backend.runs_list(RunFilter(function=flt.function, status=flt.status, since=middle))
        until = backend.runs_list(RunFilter(function=flt.function, status=flt.status, until=middle))
        assert [r.id for r in since] == [new.id], flt
        assert [r.id for r in until] == [old.id], flt


def test_function_stats_count_runs_and_failures_in_the_window(backend: Storage) -> None:
    start = time.time() - 1
    backend.events_send([ev("go", f"e{i}") for i in range(3)])
    jobs = claim(backend)
    assert len(jobs) == 3
    results = [JobResult(jobs[0].run_id, jobs[0].token, "one", outcome=Failed({"type": "X", "message": "m"})),
               JobResult(jobs[1].run_id, jobs[1].token, "one", outcome=Completed("1"))]
    assert backend.jobs_commit(results) == [True, True]
    stats = backend.functions_stats(start)
    assert stats["one"].runs == 3 and stats["one"].failed == 1
    assert stats["capped"].runs == 0 and stats["capped"].failed == 0
    assert backend.functions_stats(time.time() + 5)["one"].runs == 0
    assert backend.runs_count("failed") == 1
    assert backend.runs_count("completed") == 1
    assert backend.runs_count("running") == 1


def test_worker_registry(backend: Storage) -> None:
    now = backend.now()
    w = WorkerRow("host:1:abc", "worker", "host", 1, ("default", "live"), 32, now)
    backend.worker_beat(w)
    backend.worker_beat(WorkerRow("host:2:def", "dispatcher", "host", 2, ("background",), 16, now))
    listed = backend.workers_list(now - 60)
    assert [x.id for x in listed] == ["host:1:abc", "host:2:def"]
    first = listed[0]
    assert first.pools == ("default", "live") and first.concurrency == 32 and first.kind == "worker"
    assert first.seen_at >= now - 1
    assert backend.workers_list(backend.now() + 60) == []  # nobody was heard from in the future
    backend.worker_remove("host:1:abc")
    assert [x.id for x in backend.workers_list(now - 60)] == ["host:2:def"]
