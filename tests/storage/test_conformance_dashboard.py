"""Storage verbs behind the dashboard's lists, on every backend: top-level runs, a function's
runs in one status, and events without the internal ones, by name, page after page."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from conveyor.records import Failed, NewChild, NewEvent, StepWrite, Suspended
from conveyor.storage.base import EventCursor, FunctionSpec, JobResult, RunFilter, Storage


def ev(name: str, id: str, ts: float | None = None) -> NewEvent:
    return NewEvent(id, name, json.dumps({}), time.time() if ts is None else ts)


def fan_out(backend: Storage, n: int) -> str:
    """A parent run of ``one`` whose map step created ``n`` children; returns the parent's id."""
    backend.events_send([ev("go", "parent")])
    [job] = [j for j in backend.jobs_claim("w1", ("default",), ["one"], 100, 30.0) if j.event_id == "parent"]
    kids = [NewChild(f"{job.run_id}.kid{i}", "one", NewEvent(f"{job.run_id}.kid{i}", "conveyor/map", str(i),
                                                             time.time()), "m", i) for i in range(n)]
    fan = StepWrite("m", "map", "waiting", 0, 1, children=kids, children_total=n, children_created=n,
                    started_at=time.time())
    assert backend.jobs_commit([JobResult(job.run_id, job.token, "one", steps=[fan],
                                          outcome=Suspended(None, "map"))]) == [True]
    return job.run_id


def test_top_level_runs_leave_children_out_whatever_the_other_filters(backend: Storage) -> None:
    parent = fan_out(backend, 3)
    backend.events_send([ev("go", "solo"), ev("bg.go", "other")])
    everything = backend.runs_list(RunFilter())
    assert len(everything) == 6
    tops = {r.id for r in everything if r.parent_id is None}
    assert len(tops) == 3 and parent in tops
    assert {r.id for r in backend.runs_list(RunFilter(top_level=True))} == tops
    assert {r.id for r in backend.runs_list(RunFilter(top_level=True, function="one"))} == tops - {
        r.id for r in everything if r.function_id != "one"}
    queued = {r.id for r in everything if r.status == "queued" and r.parent_id is None}
    assert {r.id for r in backend.runs_list(RunFilter(top_level=True, status="queued"))} == queued
    assert {r.id for r in backend.runs_list(RunFilter(top_level=True, function="one", status="queued"))} == {
        r.id for r in everything if r.status == "queued" and r.parent_id is None and r.function_id == "one"}
    assert [r.id for r in backend.runs_list(RunFilter(top_level=True, event_id="parent"))] == [parent]
    assert backend.runs_list(RunFilter(top_level=True, event_id=f"{parent}.kid0")) == []
    assert backend.runs_list(RunFilter(top_level=True, parent_id=parent)) == []
    # keyset pages, newest first
    first = backend.runs_list(RunFilter(top_level=True, limit=2))
    rest = backend.runs_list(RunFilter(top_level=True, limit=2, before=first[-1].id))
    assert [r.id for r in first + rest] == sorted(tops, reverse=True)


def test_a_functions_runs_in_one_status(backend: Storage) -> None:
    backend.events_send([ev("go", f"e{i}") for i in range(4)] + [ev("bg.go", "b0")])
    jobs = backend.jobs_claim("w1", ("default",), ["one"], 2, 30.0)
    failed = [JobResult(j.run_id, j.token, "one", outcome=Failed({"type": "X", "message": "m"})) for j in jobs]
    assert backend.jobs_commit(failed) == [True, True]
    got = backend.runs_list(RunFilter(function="one", status="failed"))
    assert sorted(r.id for r in got) == sorted(j.run_id for j in jobs)
    assert all(r.status == "failed" and r.function_id == "one" for r in got)
    assert len(backend.runs_list(RunFilter(function="one", status="queued"))) == 2
    assert backend.runs_list(RunFilter(function="bg", status="failed")) == []
    page = backend.runs_list(RunFilter(function="one", status="failed", limit=1))
    older = backend.runs_list(RunFilter(function="one", status="failed", limit=1, before=page[0].id))
    assert [r.id for r in page + older] == sorted((j.run_id for j in jobs), reverse=True)
    window = backend.runs_list(RunFilter(function="one", status="failed", since=time.time() + 60))
    assert window == []


def test_events_without_internal_ones_by_name_and_page_after_page(backend: Storage) -> None:
    t = time.time() - 60  # before the fan-out's events
    backend.events_send([ev("go", "a", t), ev("capped.go", "b", t + 1), ev("go", "c", t + 2), ev("go", "d", t + 2)])
    fan_out(backend, 2)  # two internal 'conveyor/map' events, the newest of all
    everything = backend.events_list(None, None, 100)
    assert [e.name for e in everything[:2]] == ["conveyor/map", "conveyor/map"]
    sent = backend.events_list(None, None, 100, internal=False)
    assert [e.id for e in sent] == ["parent", "d", "c", "b", "a"]
    named = backend.events_list("go", None, 100)
    assert [e.id for e in named] == ["parent", "d", "c", "a"]
    assert backend.events_list("go", None, 100, internal=False) == named
    assert [e.id for e in backend.events_list("conveyor/map", None, 100)] == [e.id for e in everything[:2]]
    # a name decides by itself: internal=False leaves out internal events only when no name is given
    assert backend.events_list("conveyor/map", None, 100, internal=False) == everything[:2]
    # pages: the cursor is the last event's (ts, id); equal times are ordered by id
    for name in (None, "go"):
        seen = []
        cursor = None
        while True:
            page = backend.events_list(name, cursor, 2, internal=False)
            seen += [e.id for e in page]
            if len(page) < 2:
                break
            cursor = EventCursor(page[-1].ts, page[-1].id)
        assert seen == [e.id for e in (sent if name is None else named)], name


@pytest.mark.parametrize("name", [None, "go"])
def test_an_event_page_after_the_last_one_is_empty(backend: Storage, name: str | None) -> None:
    backend.events_send([ev("go", "only")])
    [only] = backend.events_list(name, None, 10, internal=False)
    assert backend.events_list(name, EventCursor(only.ts, only.id), 10, internal=False) == []


def test_a_parents_children_in_one_status_page_by_page_in_item_order(backend: Storage) -> None:
    parent = fan_out(backend, 7)
    kids = [r.id for r in backend.runs_list(RunFilter(parent_id=parent, limit=100))]
    assert kids == [f"{parent}.kid{i}" for i in range(7)]
    jobs = {j.run_id: j for j in backend.jobs_claim("w1", ("default",), ["one"], 100, 30.0)}
    failing = [kids[i] for i in (1, 4, 5)]
    results = [JobResult(k, jobs[k].token, "one", outcome=Failed({"type": "X", "message": "m"})) for k in failing]
    assert backend.jobs_commit(results) == [True] * 3
    pages, cursor = [], None
    while True:
        page = backend.runs_list(RunFilter(parent_id=parent, status="failed", limit=2, before=cursor))
        pages.append([r.id for r in page])
        if len(page) < 2:
            break
        cursor = page[-1].id
    assert pages == [failing[:2], failing[2:]]
    rest = backend.runs_list(RunFilter(parent_id=parent, limit=100, before=kids[4]))
    assert [r.id for r in rest] == kids[5:]
    assert backend.runs_list(RunFilter(parent_id=parent, before="no-such-run")) == []
    assert backend.children_counts(parent) == {"failed": 3, "running": 4}


def test_a_time_window_applies_to_every_filter(backend: Storage) -> None:
    parent = fan_out(backend, 2)
    later = time.time() + 60
    for flt in (RunFilter(event_id="parent"), RunFilter(parent_id=parent), RunFilter(top_level=True),
                RunFilter(function="one", status="waiting"), RunFilter(parent_id=parent, status="queued")):
        assert backend.runs_list(flt), flt
        assert backend.runs_list(RunFilter(**{**_fields(flt), "since": later})) == [], flt
        assert backend.runs_list(RunFilter(**{**_fields(flt), "until": 0.0})) == [], flt


def _fields(flt: RunFilter) -> dict[str, object]:
    return {name: getattr(flt, name) for name in RunFilter.__dataclass_fields__}


def test_the_runs_of_a_page_of_events_come_in_one_query(backend: Storage) -> None:
    backend.functions_sync([FunctionSpec("also", "default", ("go",), retries=3)])  # "go" starts two runs
    backend.events_send([ev("go", "a"), ev("bg.go", "b"), ev("nobody.listens", "c")])
    got = backend.runs_of_events(["a", "b", "c", "unknown"], 10)
    assert list(got) == ["a", "b", "c", "unknown"]
    assert [r.function_id for r in got["a"]] == [r.function_id for r in backend.runs_list(RunFilter(event_id="a"))]
    assert sorted(r.function_id for r in got["a"]) == ["also", "one"]
    assert [r.id for r in got["b"]] == [r.id for r in backend.runs_list(RunFilter(event_id="b"))]
    assert got["c"] == [] and got["unknown"] == []
    newest = backend.runs_of_events(["a", "b"], 1)
    assert newest == {"a": backend.runs_list(RunFilter(event_id="a", limit=1)), "b": got["b"]}
    assert backend.runs_of_events([], 10) == {}
    # on the unique (event_id, function_id) index
    index = r"USING INDEX sqlite_autoindex_conveyor_runs_\d \(event_id=\?\)" if backend.url.startswith("sqlite") \
        else r"\bconveyor_runs_event_id_function_id_key\b"
    plan = _plan(backend, "runs_of_events", (backend._array(["a", "b"]), 10))  # type: ignore[attr-defined]
    assert re.search(index, plan), plan


def _plan(backend: Storage, block: str, params: Any) -> str:
    """How the database reads the rows of a block of its queries.sql, with these parameters."""
    sql = backend.q[block]  # type: ignore[attr-defined]
    with backend._read() as conn:  # type: ignore[attr-defined]
        if backend.url.startswith("sqlite"):
            return " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        conn.execute("SET enable_seqscan = off")  # a handful of rows: a scan would be cheapest
        try:
            return " ".join(row[0] for row in conn.execute("EXPLAIN " + sql, params, prepare=False))
        finally:
            conn.execute("RESET enable_seqscan")


@pytest.mark.parametrize(("status", "index"), [
    ("failed", "conveyor_runs_function_failed"),  # dead letters: a partial index of failed runs only
    ("queued", None),  # any other status: an index (the function's, with the status as a filter)
])
def test_a_functions_runs_in_one_status_are_read_on_an_index(backend: Storage, status: str,
                                                              index: str | None) -> None:
    backend.events_send([ev("go", f"e{i}") for i in range(3)])
    query = backend._runs_query(RunFilter(function="one", status=status, limit=51))  # type: ignore[attr-defined]
    plan = _plan(backend, *query)
    assert "Seq Scan" not in plan and re.search(r"USING (COVERING )?INDEX|Index( Only)? Scan", plan), plan
    if index is not None:
        assert re.search(rf"\b{index}\b", plan), plan
