"""Runs complete through push delivery, with every piece real (see ``conftest.push_env``)."""

from __future__ import annotations

import itertools
from typing import Any

from tests.conftest import wait_until

from conveyor.push.protocol import PushResult
from conveyor.records import Completed, StepWrite, Suspended
from conveyor.worker.delivery import never_early

from .conftest import PushEnv


def test_multi_step_sync_and_async_runs_complete(push_env: PushEnv) -> None:
    runs = {f"s{i}": push_env.send("push.three", {"key": f"s{i}"}) for i in range(5)}
    runs["async"] = push_env.send("push.async", {"key": "async"})
    for key, run_id in runs.items():
        run = push_env.wait(run_id)
        assert run.status == "completed", run.error
        expected: Any = [1, 1] if key == "async" else {"a": 1, "b": 1, "c": 1}
        assert run.output == expected  # each step body ran once: its first execution was committed
        assert all((s.status, s.attempts) == ("completed", 1) for s in run.steps)
    assert push_env.faults["live"].traffic.runs() >= set(runs.values())
    assert push_env.faults["background"].traffic.runs() == set()
    assert push_env.tally.snapshot() == {f"{k}:{s}": 1 for k in runs for s in ("ab" if k == "async" else "abc")}



def test_a_durable_sleep_holds_no_endpoint(push_env: PushEnv) -> None:
    run = push_env.wait(push_env.send("push.sleep", {"seconds": 0.3}))
    assert run.status == "completed", run.error
    assert run.output["after"] - run.output["before"] >= 0.3
    assert [(s.id, s.status) for s in run.steps] == [("before", "completed"), ("nap", "completed"),
                                                     ("after", "completed")]
    times = push_env.faults["live"].traffic.times_of(run.id)
    assert len(times) >= 2 and max(b - a for a, b in itertools.pairwise(times)) >= 0.25


def test_map_children_are_pushed_to_the_background_pool_and_the_reduce_reads_them(push_env: PushEnv) -> None:
    n = 40
    parent = push_env.wait(push_env.send("push.split", {"n": n}))
    assert parent.status == "completed", parent.error
    assert parent.output == {"sum": sum(i * i for i in range(n)), "n": n}  # read through the server's view
    children = push_env.code.list_runs(function="square", limit=1000)
    assert len(children) == n and {c.pool for c in children} == {"background"}
    assert {c.parent_id for c in children} == {parent.id}
    live, background = (push_env.faults[m].traffic.runs() for m in ("live", "background"))
    assert parent.id in live and parent.id not in background
    assert {c.id for c in children} <= background and not {c.id for c in children} & live
    assert push_env.tally["square"] == n
    assert parent.progress is not None and parent.progress.completed == n


def test_on_failure_runs_through_push_once(push_env: PushEnv) -> None:
    run = push_env.wait(push_env.send("push.fail", {"why": "bad input"}))
    assert run.status == "failed" and run.error["type"] == "NonRetriableError"
    wait_until(lambda: push_env.tally["on_failure"] == 1, 30, "the on_failure handler to run")
    assert push_env.tally.values("on_failure") == [("push.fail", "bad input", "no way: bad input")]
    [dead] = push_env.code.dead_letters()
    assert dead.id == run.id
    handler = wait_until(lambda: [r for r in push_env.code.list_runs(function="fragile/on-failure")
                                  if r.status == "completed"], 30, "the handler run to complete")
    assert len(handler) == 1


def test_the_same_function_served_by_two_pools_lands_on_the_right_endpoint(push_env: PushEnv) -> None:
    score = push_env.code.functions["score"]
    live = [score.invoke({"x": i}, pool="live").id for i in range(5)]
    background = [score.invoke({"x": i}, pool="background").id for i in range(5, 10)]
    default = score.invoke({"x": 10}).id  # the function's own pool: live
    for i, run_id in enumerate([*live, *background, default]):
        run = push_env.wait(run_id)
        assert run.status == "completed" and run.output == {"x2": 2 * i}
    seen_live, seen_background = (push_env.faults[m].traffic.runs() for m in ("live", "background"))
    assert set(live) | {default} <= seen_live and not set(live) & seen_background
    assert set(background) <= seen_background and not set(background) & seen_live
    assert {push_env.code.get_run(r).pool for r in background} == {"background"}


def test_the_concurrency_limit_of_an_endpoint_is_respected(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=2)
    env.register("live", concurrency=3)
    runs = [env.send("push.work", {"i": i}) for i in range(24)]
    for run_id in runs:
        assert env.wait(run_id).status == "completed"
    traffic = env.faults["live"].traffic
    assert 2 <= traffic.max_inflight <= 3
    assert env.tally["work"] == 24


def test_a_rate_limit_spaces_the_invocations(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=1)
    env.register("live", rate=20.0, concurrency=50)
    runs = [env.send("push.work", {"i": i}) for i in range(30)]
    for run_id in runs:
        assert env.wait(run_id).status == "completed"
    times = sorted(t for t, _ in env.faults["live"].traffic.requests)
    # 30 starts at 20/s with a burst of 20: the last is sent 0.5 s after the first at the earliest
    # (unlimited, all 30 arrive within milliseconds); the bound leaves room for a first request
    # that arrives late on a loaded machine
    assert times[-1] - times[0] >= 0.3


def test_a_slow_rate_starts_invocations_one_by_one_even_in_batches(make_push_env: Any) -> None:
    """With batches allowed, a rate of 4/s still starts the runs a quarter second apart (after the
    burst of one second's worth), not all together once the whole batch's tokens are there."""
    env: PushEnv = make_push_env()
    env.register("live", rate=4.0, concurrency=50)
    runs = [env.send("push.work", {"i": i}) for i in range(8)]
    for run_id in runs:
        assert env.wait(run_id).status == "completed"
    requests = sorted(env.faults["live"].traffic.requests)
    assert all(len(ids) == 1 for _, ids in requests), requests
    times = [t for t, _ in requests]
    assert times[-1] - times[0] >= (8 - 4) / 4 * 0.9  # 4 at once, then one every 0.25 s


def test_an_endpoint_that_rotated_its_key_accepts_the_old_one(make_push_env: Any) -> None:
    from .harness import KEY, OLD_KEY

    env: PushEnv = make_push_env(dispatcher_keys=(OLD_KEY, None), endpoint_keys=(KEY, OLD_KEY))
    env.register("live")
    run = env.wait(env.send("push.three", {"key": "rotated"}))
    assert run.status == "completed" and run.output == {"a": 1, "b": 1, "c": 1}


def test_wake_times_an_endpoint_reports_move_later_by_the_round_trip() -> None:
    """The endpoint's clock lags the database's by the request's time in transit; shifting its
    wake times by the round trip keeps sleeps and retries from waking early."""
    sleeping = PushResult("r1", [StepWrite("nap", "sleep", "sleeping", 1, 1, wake_at=100.0)], Suspended(100.0, "sleep"))
    never_early(sleeping, 0.25)
    assert sleeping.writes[0].wake_at == 100.25 and sleeping.outcome == Suspended(100.25, "sleep")
    waiting = PushResult("r2", [], Suspended(None, "wait"))
    assert never_early(waiting, 0.25).outcome == Suspended(None, "wait")  # woken by an event, not a time
    done = PushResult("r3", [StepWrite("s", "run", "completed", 1, 1, output="1")], Completed("1"))
    never_early(done, 0.25)
    assert done.writes[0].wake_at is None and done.outcome == Completed("1")
