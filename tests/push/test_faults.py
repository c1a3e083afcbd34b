"""A failed delivery commits nothing; the job is retried with backoff; each step is committed once.

The endpoint runs every request it gets; the fault hits its answer (500 instead, an answer
after the registered timeout, a corrupted signature, a connection reset by a proxy), so the
work is done and then lost. Each step body returns how many times it has run (a counter in
the endpoint process): a step's committed output equal to its total count of executions
proves that the commit came from its last execution and that nothing ran it afterwards.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from tests.conftest import wait_until

from .conftest import PushEnv


def check_committed_once(env: PushEnv, run: Any, key: str) -> int:
    """Every step of ``run`` committed once, from its last execution; returns the re-executions."""
    assert run.status == "completed", run.error
    assert [(s.id, s.status, s.attempts) for s in run.steps] == [(s, "completed", 1) for s in "abc"]
    repeats = 0
    for step in "abc":
        executions = env.tally[f"{key}:{step}"]
        assert run.output[step] == executions, f"step {step} of {key}: committed #{run.output[step]} of {executions}"
        repeats += executions - 1
    return repeats


@pytest.mark.parametrize("faults", [["500", "500", "500"], ["badsig", "badsig"], ["slow"]],
                         ids=["500", "badsig", "slow"])
def test_a_lost_answer_commits_nothing_and_is_retried(make_push_env: Any, faults: list[str]) -> None:
    env: PushEnv = make_push_env(batch=1)
    env.register("live", timeout=1.0)
    env.faults["live"].slow_for = 3.0
    env.faults["live"].fail_next(*faults)
    run = env.wait(env.send("push.three", {"key": "k"}))
    assert env.faults["live"].applied == faults
    assert check_committed_once(env, run, "k") == len(faults)  # each lost answer cost one step, re-run
    times = env.faults["live"].traffic.times_of(run.id)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # backoff base 0.05 s doubling (no jitter): the n-th retry waits 0.05 * 2**(n-1) s at least
    if faults[0] != "slow":
        assert all(g >= 0.05 * 2**i * 0.9 for i, g in enumerate(gaps[: len(faults)])), gaps


def test_a_reset_connection_commits_nothing_and_is_retried(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=1, proxy=True)
    env.register("live")
    assert env.proxy is not None
    env.proxy.reset_next(2)
    run = env.wait(env.send("push.three", {"key": "r"}))
    assert env.proxy.done == 2
    assert check_committed_once(env, run, "r") == 2


def test_many_runs_through_every_kind_of_fault(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=4, proxy=True)
    env.register("live", timeout=1.0, concurrency=8)
    env.faults["live"].slow_for = 1.5
    env.faults["live"].fail_next("500", "badsig", "slow", "500", "badsig")
    assert env.proxy is not None
    env.proxy.reset_next(3)
    keys = [f"m{i}" for i in range(20)]
    runs = {k: env.send("push.three", {"key": k}) for k in keys}
    repeats = sum(check_committed_once(env, env.wait(run_id), k) for k, run_id in runs.items())
    assert env.proxy.done == 3 and len(env.faults["live"].applied) == 5
    assert repeats >= 5  # each of the five spoilt answers (distinct requests) lost a step execution


def test_after_max_failures_the_run_is_a_dead_letter_and_can_be_redriven(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=1, max_failures=3)
    env.register("live")
    env.faults["live"].fail_next("500", "500", "500")
    run = env.wait(env.send("push.three", {"key": "d"}))
    assert run.status == "failed" and run.error["type"] == "DeliveryFailed"
    assert "3 deliveries in a row" in run.error["message"] and env.url("live") in run.error["message"]
    assert [r.id for r in env.code.dead_letters()] == [run.id]
    assert env.code.redrive([run.id]) == [run.id]
    again = env.wait(run.id)
    assert again.status == "completed"
    assert again.output == {"a": 4, "b": 1, "c": 1}  # step a ran three times for nothing, then once for good


def test_an_endpoint_that_does_not_answer_at_all_is_retried_until_it_does(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=1)
    gone = "http://127.0.0.1:9/nothing/"  # the discard port: connection refused
    env.code.register_endpoint(gone, server_url=env.server.url, pool="live", api_token="push-api-token-42")
    run_id = env.send("push.three", {"key": "x"})
    wait_until(lambda: env.code.get_run(run_id).status == "queued", 10, "the failed delivery to release the run")
    env.register("live")  # a second endpoint of the pool: the run goes there eventually
    assert env.wait(run_id).status == "completed"


def test_stopping_the_dispatcher_gives_back_the_runs_in_flight(make_push_env: Any) -> None:
    env: PushEnv = make_push_env(batch=1)
    env.register("live", timeout=30.0)
    env.faults["live"].slow_for = 2.0
    env.faults["live"].fail_next("slow")
    run_id = env.send("push.three", {"key": "stop"})
    wait_until(lambda: run_id in env.faults["live"].traffic.runs(), 10, "the endpoint to get the run")
    assert env.dispatcher.ready
    env.dispatcher.stop(grace=0.1)
    assert not env.dispatcher.ready
    run = env.code.get_run(run_id)
    assert run.status == "queued" and run.steps == []  # released, nothing committed
    env.dispatcher.stop(grace=0.1)  # idempotent
