"""Crash tests with real worker processes: SIGKILL, SIGTERM, and a worker that lost its lease.

Each runs on every backend (``[sqlite]``, ``[postgres]``).

Nothing is lost when a worker dies; a step's result is committed at most once;
a step body runs again only for the attempts a dead worker had in flight; a
worker that lost its lease cannot overwrite the new owner's work.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from conveyor import Event

from .helpers import STEPS, check_runs_committed_once, completed

pytestmark = pytest.mark.slow

N_EVENTS = 200
KILLS = 4
CONCURRENCY = 4


@pytest.mark.parametrize("step_seconds", ["0.02", "0"], ids=["20ms-steps", "instant-steps"])
def test_sigkill_mid_step_loses_nothing_and_commits_each_step_once(
    crash_app, workers, step_log, wait_until, step_seconds
) -> None:
    workers.env["CRASH_STEP_SECONDS"] = step_seconds
    app = crash_app()
    event_ids = app.send_many([Event(name="crash.three", data={"n": i}, id=f"kill-{i}") for i in range(N_EVENTS)])
    total_steps = N_EVENTS * len(STEPS)
    proc = workers.spawn(concurrency=CONCURRENCY)
    kills = 0
    for _ in range(KILLS):
        base = step_log.count()
        # let the worker get well into the work, then kill it in the middle of its steps
        wait_until(
            lambda base=base, proc=proc: step_log.count() >= base + 60 or proc.poll() is not None,
            timeout=60,
            message="the worker to make progress",
        )
        assert proc.poll() is None, f"worker died on its own:\n{workers.stderr(proc)}"
        assert step_log.count() < total_steps, "all work done before the kill: test too slow"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
        proc = workers.spawn(concurrency=CONCURRENCY)

    wait_until(
        lambda: completed(app, "three-steps") == N_EVENTS or proc.poll() is not None,
        timeout=120,
        message=lambda: f"all runs to complete ({completed(app, 'three-steps')}/{N_EVENTS})",
    )
    assert proc.poll() is None, f"the last worker died:\n{workers.stderr(proc)}"

    run_ids = check_runs_committed_once(app, event_ids)
    assert len(run_ids) == N_EVENTS

    executions = step_log.executions()
    expected_keys = {(run_id, step) for run_id in run_ids for step in STEPS}
    assert set(executions) == expected_keys, "step bodies ran for unknown runs or steps"
    too_many = {k: n for k, n in executions.items() if n > 1 + kills}
    assert too_many == {}, f"step bodies ran more than 1 + {kills} times: {too_many}"
    # "at most one step attempt is repeated" per run and per crash: a run repeats at
    # most one step for each killed worker that had it in flight
    killed_pids = {p.pid for p in workers.procs if p.returncode == -signal.SIGKILL}
    assert len(killed_pids) == kills
    over = {}
    lines = step_log.lines()
    for run_id in run_ids:
        ran = [(step, pid) for r, step, _, pid in lines if r == run_id]
        crashes = {pid for _, pid in ran if pid in killed_pids}
        repeats = len(ran) - len(STEPS)
        if repeats > len(crashes):
            over[run_id] = ran
    assert over == {}, (
        f"{len(over)} runs repeated more than one step per crash, e.g. "
        f"{next(iter(over.items())) if over else None}: a completed step was not durable "
        "before the function went on to the next one"
    )
    # In flight when a worker dies: the bodies of its `concurrency` executing invocations,
    # plus, for each slot, the last checkpoint of the invocation that just returned (a
    # slot frees when its invocation returns, before the committer's transaction ends).
    repeated = sum(executions.values()) - total_steps
    assert repeated <= kills * 2 * CONCURRENCY, (
        f"{repeated} step bodies re-ran after {kills} kills of a worker with concurrency {CONCURRENCY}"
    )


def test_sigterm_exits_zero_and_work_completes_on_another_worker(crash_app, workers, step_log, wait_until) -> None:
    app = crash_app()
    n = 40
    event_ids = app.send_many([Event(name="crash.three", data={"n": i}, id=f"term-{i}") for i in range(n)])
    proc = workers.spawn(concurrency=CONCURRENCY, CRASH_STEP_SECONDS="0.1")
    wait_until(
        lambda: step_log.count() >= 10 or proc.poll() is not None,
        timeout=60,
        message="the worker to make progress",
    )
    assert proc.poll() is None, workers.stderr(proc)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)  # in-flight steps take 0.1 s; the grace is longer
    except subprocess.TimeoutExpired:
        pytest.fail("worker did not exit within 15 s of SIGTERM")
    assert code == 0, f"exit status {code} after SIGTERM:\n{workers.stderr(proc)}"
    assert completed(app, "three-steps") < n, "all work done before SIGTERM: test too slow"

    successor = workers.spawn(concurrency=CONCURRENCY)
    wait_until(
        lambda: completed(app, "three-steps") == n or successor.poll() is not None,
        timeout=60,
        message=lambda: f"all runs to complete ({completed(app, 'three-steps')}/{n})",
    )
    assert successor.poll() is None, workers.stderr(successor)
    run_ids = check_runs_committed_once(app, event_ids)
    executions = step_log.executions()
    assert {k[0] for k in executions} == set(run_ids)
    # a clean stop finishes or releases its work: at most its in-flight steps run again
    repeated = sum(executions.values()) - n * len(STEPS)
    assert repeated <= CONCURRENCY, f"{repeated} step bodies re-ran after a clean SIGTERM"
    successor.send_signal(signal.SIGTERM)
    assert successor.wait(timeout=15) == 0


def test_worker_that_lost_its_lease_cannot_overwrite_new_owner(crash_app, workers, step_log, wait_until) -> None:
    app = crash_app()
    event_id = app.send("crash.slow", {}, id="lease-1")

    stale = workers.spawn(concurrency=1)
    wait_until(
        lambda: step_log.count() >= 1 or stale.poll() is not None,
        timeout=60,
        message="the first worker to start the slow step",
    )
    assert stale.poll() is None, workers.stderr(stale)
    stale.send_signal(signal.SIGSTOP)  # frozen mid-step, past its 1 s lease
    try:
        owner = workers.spawn(concurrency=1)
        wait_until(
            lambda: (
                (app.runs_for_event(event_id) and app.runs_for_event(event_id)[0].status == "completed")
                or owner.poll() is not None
            ),
            timeout=60,
            message="the second worker to take over the expired lease and finish",
        )
        assert owner.poll() is None, workers.stderr(owner)
        (run,) = app.runs_for_event(event_id)
        run = app.get_run(run.id)
        assert run.output == {"pid": owner.pid}, run
    finally:
        stale.send_signal(signal.SIGCONT)

    # the stale worker wakes up with a finished step body and an expired lease; a
    # clean stop makes it finish (try to commit) or release that work before exiting
    stale.send_signal(signal.SIGTERM)
    try:
        stale_code = stale.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the stale worker did not exit after SIGTERM")

    after = app.get_run(run.id)
    assert after.status == "completed"
    assert after.output == {"pid": owner.pid}, "the stale worker overwrote the run's output"
    assert [s.id for s in after.steps] == ["slow"]
    assert after.steps[0].status == "completed"
    assert after.steps[0].output == {"pid": owner.pid}, "the stale worker overwrote the step"
    assert step_log.pids(run.id, "slow") == [stale.pid, owner.pid]
    assert len(app.runs_for_event(event_id)) == 1
    assert stale_code == 0, f"stale worker exit status {stale_code}:\n{workers.stderr(stale)}"
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=15) == 0
