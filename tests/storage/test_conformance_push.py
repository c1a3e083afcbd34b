"""Storage verbs that push delivery relies on, on every backend: a release that is due again
only after a delay, runs and children sent to another pool than their function's, and
claims limited to the functions an endpoint serves."""

from __future__ import annotations

import time

from tests.storage.test_conformance import claim, ev

from conveyor.records import NewChild, NewEvent, StepWrite, Suspended
from conveyor.storage.base import DirectRun, JobResult, RunFilter, Storage


def test_a_delayed_release_is_due_only_after_the_delay(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    steps = backend.steps_list(job.run_id)
    released = JobResult(job.run_id, job.token, job.function_id, release=True, delay=3600.0)
    assert backend.jobs_commit([released]) == [True]
    assert claim(backend) == []  # not due yet
    due = backend.jobs_next_due(["default"], ["one"])
    assert due is not None and due > time.time() + 3000
    run = backend.run_get(job.run_id)
    assert run is not None and run.status == "queued"
    assert backend.steps_list(job.run_id) == steps  # step state untouched
    stale = JobResult(job.run_id, job.token, job.function_id, release=True, delay=0.0)
    assert backend.jobs_commit([stale]) == [False]  # the release bumped the token: fenced out


def test_a_release_without_delay_is_due_at_once(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    assert backend.jobs_commit([JobResult(job.run_id, job.token, "one", release=True, delay=0.0)]) == [True]
    [again] = claim(backend)
    assert again.run_id == job.run_id and again.token != job.token


def test_a_direct_run_can_go_to_another_pool(backend: Storage) -> None:
    backend.runs_start([DirectRun("d1", "one", NewEvent("d1", "conveyor/invoke", "{}", time.time()), "background"),
                        DirectRun("d2", "one", NewEvent("d2", "conveyor/invoke", "{}", time.time()))])
    assert [j.run_id for j in claim(backend, pools=("background",))] == ["d1"]
    assert [j.run_id for j in claim(backend, pools=("default",))] == ["d2"]
    assert backend.run_get("d1").pool == "background"  # type: ignore[union-attr]


def test_children_can_go_to_another_pool(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [parent] = claim(backend)
    children = [NewChild(f"{parent.run_id}.c{i}", "one", NewEvent(f"{parent.run_id}.c{i}", "conveyor/map", "{}", 1.0),
                         "fan", i, pool)
                for i, pool in enumerate(["background", None, "background"])]
    fan = StepWrite("fan", "map", "waiting", 0, 1, children=children, children_total=3, children_created=3)
    result = JobResult(parent.run_id, parent.token, "one", steps=[fan], outcome=Suspended(None, "map"))
    assert backend.jobs_commit([result]) == [True]
    pools = {r.id: r.pool for r in backend.runs_list(RunFilter(parent_id=parent.run_id))}
    assert pools == {children[0].run_id: "background", children[1].run_id: "default",
                     children[2].run_id: "background"}
    assert sorted(j.run_id for j in claim(backend, pools=("background",))) == [children[0].run_id,
                                                                                children[2].run_id]


def test_claims_take_only_the_functions_asked_for(backend: Storage) -> None:
    backend.events_send([ev("go", id="a"), ev("capped.go", id="b")])
    [job] = backend.jobs_claim("w", ["default"], ["capped"], 10, 30.0)
    assert job.function_id == "capped"
    assert backend.jobs_claim("w", ["default"], ["capped"], 10, 30.0) == []
    assert [j.function_id for j in backend.jobs_claim("w", ["default"], ["one"], 10, 30.0)] == ["one"]
