"""The storage contract, verb by verb, on every backend."""

from __future__ import annotations

import json
import time

from conveyor.records import Completed, NewEvent, StepWrite, Suspended
from conveyor.storage.base import JobResult, RunFilter, Storage


def ev(name: str, data: dict | None = None, id: str | None = None) -> NewEvent:
    return NewEvent(id or f"e-{time.monotonic_ns()}", name, json.dumps(data or {}), time.time())


def claim(s: Storage, limit: int = 10, pools: tuple[str, ...] = ("default",), lease: float = 30.0):
    return s.jobs_claim("w1", pools, ["one", "capped", "keyed", "bg"], limit, lease)


def test_events_are_routed_once_and_idempotent(backend: Storage) -> None:
    assert backend.events_send([ev("go", id="a"), ev("go", id="a"), ev("nothing", id="b")]) == [True, False, True]
    runs = backend.runs_list(RunFilter(event_id="a"))
    assert [r.function_id for r in runs] == ["one"]
    assert backend.runs_list(RunFilter(event_id="b")) == []
    assert backend.event_get("b") is not None  # kept, harmless


def test_claim_leases_and_fences(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    assert claim(backend) == []  # leased: nobody else gets it
    stale = JobResult(job.run_id, job.token - 1, job.function_id, outcome=Completed("1"))
    assert backend.jobs_commit([stale]) == [False]
    good = JobResult(job.run_id, job.token, job.function_id,
                     steps=[StepWrite("s", "run", "completed", 1, 1, output="1")], outcome=Completed("2"))
    assert backend.jobs_commit([good]) == [True]
    run = backend.run_get(job.run_id)
    assert run is not None and run.status == "completed" and run.output == "2"
    # a terminal run never changes, and its job is gone
    assert backend.jobs_commit([good]) == [False]


def test_expired_lease_is_claimed_again_with_a_new_token(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [first] = claim(backend, lease=0.05)
    deadline = time.time() + 5
    second = []
    while not second and time.time() < deadline:
        second = claim(backend, lease=30)
    assert second and second[0].run_id == first.run_id and second[0].token != first.token
    late = JobResult(first.run_id, first.token, first.function_id,
                     steps=[StepWrite("s", "run", "completed", 1, 1, output='"late"')])
    assert backend.jobs_commit([late]) == [False]
    assert backend.steps_list(first.run_id) == []


def test_heartbeat_extends_and_reports_lost(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend, lease=0.2)
    assert backend.jobs_heartbeat([(job.run_id, job.token)], 30.0) == []
    assert backend.jobs_heartbeat([(job.run_id, job.token + 7)], 30.0) == [job.run_id]


def test_finished_step_is_never_rewritten(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    w = StepWrite("s", "run", "completed", 1, 1, output='"first"')
    assert backend.jobs_commit([JobResult(job.run_id, job.token, "one", steps=[w])]) == [True]
    w2 = StepWrite("s", "run", "completed", 2, 1, output='"second"')
    assert backend.jobs_commit([JobResult(job.run_id, job.token, "one", steps=[w2])]) == [True]
    [step] = backend.steps_list(job.run_id)
    assert step.output == '"first"' and step.attempts == 1


def test_concurrency_limit_caps_claims(backend: Storage) -> None:
    backend.events_send([ev("capped.go", id=f"c{i}") for i in range(5)])
    assert len(claim(backend)) == 2
    assert claim(backend) == []


def test_concurrency_key_caps_per_value(backend: Storage) -> None:
    backend.events_send([ev("keyed.go", {"user": u}, id=f"k{i}") for i, u in enumerate("aabbc")])
    jobs = claim(backend)
    assert len(jobs) == 3  # one per user
    assert claim(backend) == []


def test_suspended_job_waits_and_frees_its_slot(backend: Storage) -> None:
    backend.events_send([ev("capped.go", id=f"c{i}") for i in range(3)])
    jobs = claim(backend)
    assert len(jobs) == 2
    sleeping = JobResult(jobs[0].run_id, jobs[0].token, "capped", outcome=Suspended(time.time() + 3600, "sleep"))
    assert backend.jobs_commit([sleeping]) == [True]
    assert backend.run_get(jobs[0].run_id).status == "waiting"  # type: ignore[union-attr]
    assert len(claim(backend)) == 1  # the sleeper does not hold a slot


def test_pools_are_separate(backend: Storage) -> None:
    backend.events_send([ev("bg.go", id="b1"), ev("go", id="d1")])
    assert [j.function_id for j in claim(backend, pools=("background",))] == ["bg"]
    assert [j.function_id for j in claim(backend, pools=("default",))] == ["one"]


def test_release_bumps_the_token(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    assert backend.jobs_commit([JobResult(job.run_id, job.token, "", release=True)]) == [True]
    [again] = claim(backend)
    assert again.token > job.token
    assert backend.run_get(job.run_id).status == "running"  # type: ignore[union-attr]


def test_cancel_removes_the_job(backend: Storage) -> None:
    backend.events_send([ev("go", id="a")])
    [run] = backend.runs_list(RunFilter(event_id="a"))
    assert backend.run_cancel(run.id)
    assert not backend.run_cancel(run.id)
    assert claim(backend) == []
    assert backend.run_get(run.id).status == "cancelled"  # type: ignore[union-attr]


def test_requeue_keeps_completed_steps(backend: Storage) -> None:
    from conveyor.records import Failed

    backend.events_send([ev("go", id="a")])
    [job] = claim(backend)
    steps = [StepWrite("ok", "run", "completed", 1, 1, output="1"),
             StepWrite("bad", "run", "failed", 4, 2, error={"type": "X", "message": "m"})]
    backend.jobs_commit([JobResult(job.run_id, job.token, "one", steps=steps,
                                   outcome=Failed({"type": "X", "message": "m", "step_id": "bad"}))])
    assert backend.run_requeue(job.run_id, ["failed"])
    assert [s.id for s in backend.steps_list(job.run_id)] == ["ok"]
    [again] = claim(backend)
    assert set(again.memo) == {"ok"}


def test_runs_list_is_newest_first_with_cursor(backend: Storage) -> None:
    backend.events_send([ev("go", id=f"e{i}") for i in range(5)])
    page1 = backend.runs_list(RunFilter(limit=3))
    page2 = backend.runs_list(RunFilter(limit=3, before=page1[-1].id))
    ids = [r.id for r in page1 + page2]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)


def _finish(backend: Storage, run_id: str, token: int, outcome) -> None:
    assert backend.jobs_commit([JobResult(run_id, token, "one", outcome=outcome)]) == [True]


def test_prune_deletes_old_ended_runs_and_keeps_dead_letters(backend: Storage) -> None:
    from conveyor.records import Failed

    backend.events_send([ev("go", id="old-ok"), ev("go", id="old-bad"), ev("go", id="fresh")])
    jobs = {j.event_id: j for j in claim(backend)}
    _finish(backend, jobs["old-ok"].run_id, jobs["old-ok"].token, Completed("1"))
    _finish(backend, jobs["old-bad"].run_id, jobs["old-bad"].token, Failed({"type": "X", "message": "m"}))
    cutoff = backend.now() + 1  # everything ended so far counts as old
    _finish(backend, jobs["fresh"].run_id, jobs["fresh"].token, Suspended(time.time() + 3600, "sleep"))
    assert backend.runs_prune(cutoff, ["completed", "cancelled"], 100) == 1
    assert backend.run_get(jobs["old-ok"].run_id) is None
    assert backend.event_get("old-ok") is None
    assert backend.run_get(jobs["old-bad"].run_id) is not None  # a dead letter stays
    assert backend.run_get(jobs["fresh"].run_id) is not None  # still waiting
    assert backend.runs_delete([jobs["old-bad"].run_id]) == 1
    assert backend.run_get(jobs["old-bad"].run_id) is None


def test_prune_of_unrouted_events(backend: Storage) -> None:
    backend.events_send([ev("nothing", id="n1"), ev("go", id="g1")])
    assert backend.events_prune(backend.now() + 1, 100) == 1
    assert backend.event_get("n1") is None and backend.event_get("g1") is not None


def test_reconciler_resumes_a_parent_whose_count_is_off(backend: Storage) -> None:
    from conveyor.records import NewChild

    backend.events_send([ev("go", id="p")])
    [parent] = claim(backend)
    kids = [NewChild(f"kid{i}", "one", NewEvent(f"kid{i}", "conveyor/map", "1", time.time()), "m", i) for i in range(2)]
    fan = StepWrite("m", "map", "waiting", 0, 1, children=kids, children_total=2, children_created=2,
                    started_at=time.time())
    assert backend.jobs_commit([JobResult(parent.run_id, parent.token, "one", steps=[fan],
                                          outcome=Suspended(None, "map"))]) == [True]
    first, second = sorted(claim(backend), key=lambda j: j.run_id)
    _finish(backend, first.run_id, first.token, Completed("10"))
    with backend._write() as tx:  # type: ignore[attr-defined]  # simulate a count lost in a crash
        tx.conn.execute(backend.q["fanout_set_counts"], (0, 0, parent.run_id, "m"))  # type: ignore[attr-defined]
    _finish(backend, second.run_id, second.token, Completed("20"))
    assert backend.run_get(parent.run_id).status == "waiting"  # type: ignore[union-attr]  # stuck: 1 of 2
    assert backend.fanouts_reconcile(backend.now() + 1, 10) == 1
    [step] = backend.steps_list(parent.run_id)
    assert step.status == "completed"
    assert backend.children_outputs(parent.run_id, "m", 0, 10) == ["10", "20"]
    [again] = claim(backend)
    assert again.run_id == parent.run_id  # resumed


def test_claims_are_fair_across_pools(backend: Storage) -> None:
    backend.events_send([ev("bg.go", id=f"b{i}") for i in range(20)] + [ev("go", id="live")])
    jobs = claim(backend, limit=4, pools=("background", "default"))
    assert "default" in {j.pool for j in jobs}  # the one due job of the small pool is not starved
    assert len(jobs) == 4
