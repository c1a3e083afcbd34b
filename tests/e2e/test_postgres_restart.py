"""PostgreSQL restarts (immediate mode) in the middle of a burst of runs.

Worker processes keep running through the restart and finish every run by
themselves: they reconnect (pool, LISTEN connection, committer), nothing is lost,
every step result is committed once, and a run repeats at most one step body (the
one in flight when the server went away).

The test restarts the local cluster (``pg_ctlcluster``), so it needs the server of
``tests.support.postgres`` to be that cluster; it always leaves PostgreSQL running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.support import postgres

from conveyor import Event
from conveyor.records import NewEvent, StepWrite
from conveyor.storage.base import FunctionSpec, JobResult
from conveyor.storage.factory import open_storage

from .helpers import STEPS, check_runs_committed_once, completed

pytestmark = [pytest.mark.slow, pytest.mark.backends("postgres")]

N_EVENTS = 200
WORKERS = 2
CONCURRENCY = 4
RESTART_AFTER_STEPS = 150  # of N_EVENTS * 3: well into the burst, far from its end
CLUSTER = "main"


def _version() -> str:
    """The installed cluster's major version (``ls /etc/postgresql``), or a skip/fail."""
    root = Path("/etc/postgresql")
    versions = sorted(p.name for p in root.iterdir() if (p / CLUSTER).is_dir()) if root.is_dir() else []
    problem = None
    if not shutil.which("pg_ctlcluster") or not shutil.which("pg_isready"):
        problem = "pg_ctlcluster/pg_isready are not installed"
    elif not versions:
        problem = "no PostgreSQL cluster under /etc/postgresql"
    elif "127.0.0.1" not in postgres.BASE_URL and "localhost" not in postgres.BASE_URL:
        problem = f"the test server {postgres.BASE_URL} is not the local cluster"
    if problem:
        message = f"cannot restart PostgreSQL: {problem}"
        if postgres.required():
            pytest.fail(message + " (CI requires it)", pytrace=False)
        pytest.skip(message)
    return versions[-1]


def _ctl(version: str, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, CLUSTER, action, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _accepting() -> bool:
    probe = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "1"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


def _ensure_running(version: str, wait_until) -> None:
    """Start the cluster if it is down, and wait (bounded) until it accepts connections."""
    if not _accepting():
        _ctl(version, "start")
    wait_until(_accepting, timeout=60, message="PostgreSQL to accept connections again")


def _restart_immediate(version: str, wait_until) -> None:
    """``pg_ctlcluster VERSION main restart -m immediate`` (a crash: no checkpoint, unflushed WAL
    lost), then wait until it accepts connections; PostgreSQL is left running whatever happens."""
    try:
        restart = _ctl(version, "restart", "-m", "immediate")
        assert restart.returncode == 0, f"pg_ctlcluster restart failed: {restart.stdout}{restart.stderr}"
        wait_until(_accepting, timeout=60, message="PostgreSQL to accept connections after the restart")
    finally:
        _ensure_running(version, wait_until)


def _crash_now(version: str, wait_until) -> None:
    """What ``restart -m immediate`` does, without the ~0.2 s of ``pg_ctlcluster`` start-up
    (the WAL writer's flush interval): SIGQUIT to the postmaster at once, then start it again."""
    import psycopg

    try:
        with psycopg.connect(postgres.BASE_URL, autocommit=True, connect_timeout=5) as conn:
            (data_dir,) = conn.execute("SHOW data_directory").fetchone()  # type: ignore[misc]
        postmaster = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGQUIT)
        wait_until(lambda: not _alive(postmaster), timeout=60, message="the postmaster to exit after SIGQUIT")
    finally:
        _ensure_running(version, wait_until)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tails(workers) -> str:
    return "\n".join(
        f"--- worker pid {p.pid} (exit {p.poll()}), stderr in {workers.out_dir}:\n{workers.stderr(p)}"
        for p in workers.procs
    )


def test_workers_recover_by_themselves_when_postgres_restarts_mid_burst(
    crash_app, workers, step_log, wait_until
) -> None:
    version = _version()
    workers.env["CRASH_STEP_SECONDS"] = "0.03"
    app = crash_app()
    event_ids = app.send_many([Event(name="crash.three", data={"n": i}, id=f"pg-restart-{i}") for i in range(N_EVENTS)])
    total_steps = N_EVENTS * len(STEPS)
    procs = [workers.spawn(concurrency=CONCURRENCY) for _ in range(WORKERS)]

    wait_until(
        lambda: step_log.count() >= RESTART_AFTER_STEPS or any(p.poll() is not None for p in procs),
        timeout=60,
        message=lambda: f"the workers to make progress ({step_log.count()} step bodies)\n{_tails(workers)}",
    )
    assert all(p.poll() is None for p in procs), f"a worker died before the restart:\n{_tails(workers)}"

    before = step_log.count()
    _restart_immediate(version, wait_until)
    restarted_at = time.monotonic()
    assert before < total_steps, "all work done before the restart: test too slow"

    # a fresh app to watch: the test process's own pool is not what is under test
    watcher = crash_app()
    wait_until(
        lambda: completed(watcher, "three-steps") == N_EVENTS or any(p.poll() is not None for p in procs),
        timeout=120,
        message=lambda: (
            f"all runs to complete without restarting a worker "
            f"({completed(watcher, 'three-steps')}/{N_EVENTS} completed, {step_log.count()} step bodies, "
            f"{before} before the restart, {time.monotonic() - restarted_at:.1f}s since it)\n{_tails(workers)}"
        ),
    )
    assert all(p.poll() is None for p in procs), f"a worker died after the restart:\n{_tails(workers)}"
    assert workers.procs == procs, "a worker was restarted"
    assert step_log.count() > before, "no step body ran after the restart"

    run_ids = check_runs_committed_once(watcher, event_ids)
    executions = step_log.executions()
    assert set(executions) == {(run_id, s) for run_id in run_ids for s in STEPS}
    per_run: Counter[str] = Counter()
    for (run_id, _), n in executions.items():
        per_run[run_id] += n - 1
    over = {run_id: n for run_id, n in per_run.items() if n > 1}
    assert over == {}, f"runs that repeated more than one step body after one restart: {over}"
    ran_by = {pid for _, _, _, pid in step_log.lines()}
    assert ran_by <= {p.pid for p in procs}

    # recovered workers still stop cleanly
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=20) for p in procs]
    assert codes == [0] * WORKERS, f"exit statuses after SIGTERM: {codes}\n{_tails(workers)}"


def test_a_lease_granted_just_before_a_crash_is_not_granted_again_with_the_same_token(db_url, wait_until) -> None:
    """Fencing survives a crash: worker A claims a job, PostgreSQL crashes before anything
    else is written, worker B claims the job afterwards. A still runs its invocation and
    will try to checkpoint with its token; that write must be rejected, and B's accepted."""
    version = _version()
    storage = open_storage(db_url)
    try:
        storage.migrate()
        storage.functions_sync([FunctionSpec("one", "default", ("go",), retries=3)])
        storage.events_send([NewEvent("e-1", "go", "{}", time.time())])
        [held_by_a] = storage.jobs_claim("worker-a", ["default"], ["one"], 10, 30.0)
    finally:
        storage.close()

    _crash_now(version, wait_until)

    def checkpoint(job, output: str) -> JobResult:
        return JobResult(job.run_id, job.token, "one", steps=[StepWrite("s1", "run", "completed", 1, 1, output=output)])

    storage = open_storage(db_url)
    try:
        reclaimed = storage.jobs_claim("worker-b", ["default"], ["one"], 10, 30.0)
        if not reclaimed:  # A's claim survived the crash: it still owns the job, nobody else took it
            assert storage.jobs_commit([checkpoint(held_by_a, '"from-a"')]) == [True]
            return
        [held_by_b] = reclaimed
        assert held_by_b.run_id == held_by_a.run_id
        assert held_by_b.token != held_by_a.token, (
            f"after the crash worker B was granted token {held_by_b.token}, the token worker A "
            "still holds from its claim just before the crash: both now pass the fence"
        )
        assert storage.jobs_commit([checkpoint(held_by_a, '"from-a"')]) == [False], "A's stale write was accepted"
        assert storage.jobs_commit([checkpoint(held_by_b, '"from-b"')]) == [True]
        assert [(st.id, st.output) for st in storage.steps_list(held_by_b.run_id)] == [("s1", '"from-b"')]
    finally:
        storage.close()
