"""Fan-in survives SIGKILLs of the worker that completes the children (real processes, every backend).

A parent on pool ``reduce`` (served by a worker that is never killed) maps ~300 quick
children on pool ``default``; the children's worker is SIGKILLed several times while
children complete, including right at the end, when the last children's completions
decide the fan-in, and restarted each time. The parent must complete; its reduce body
must run exactly once and see every child's output once, in item order.
"""

from __future__ import annotations

import importlib.util
import itertools
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import Workers

pytestmark = pytest.mark.slow

APPS = Path(__file__).resolve().parent.parent / "apps"
FANOUT_APP = APPS / "fanout_app.py"
N_CHILDREN = 300
CONCURRENCY = 8
_module_names = itertools.count()


class Logs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _lines(self, prefix: str) -> list[list[str]]:
        out = []
        for path in sorted(self.directory.glob(f"{prefix}-*.log")):
            for raw in path.read_text().splitlines():
                parts = raw.split()
                if len(parts) == 4:
                    out.append(parts)
        return out

    def children(self) -> list[tuple[str, int, int, int]]:
        return [(r, int(n), int(a), int(p)) for r, n, a, p in self._lines("children")]

    def started_items(self) -> set[int]:
        return {n for _, n, _, _ in self.children()}

    def reduces(self) -> list[tuple[str, int, str, int]]:
        return [(r, int(c), d, int(p)) for r, c, d, p in self._lines("reduce")]


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    directory = tmp_path / "fanout-logs"
    directory.mkdir()
    return Logs(directory)


@pytest.fixture
def fanout_env(db_url: str, logs: Logs) -> dict[str, str]:
    return {
        "CONVEYOR_DATABASE_URL": db_url,
        "FANOUT_LOG_DIR": str(logs.directory),
        "FANOUT_LEASE_SECONDS": "1.0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def procs(db_url: str, fanout_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(db_url, fanout_env, tmp_path, FANOUT_APP)
    yield pool
    pool.kill_all()


@pytest.fixture
def fanout_app(monkeypatch: pytest.MonkeyPatch, fanout_env: dict[str, str]) -> Iterator[Any]:
    """The fan-out app in this process (same code, same database), to send and inspect."""
    for key, value in fanout_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FANOUT_LOG_DIR")  # this process never runs step bodies
    name = f"fanout_app_under_test_{next(_module_names)}"
    spec = importlib.util.spec_from_file_location(name, FANOUT_APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.app.close()


@pytest.mark.parametrize("child_seconds", ["0.01", "0"], ids=["10ms-children", "instant-children"])
def test_sigkill_during_child_completion_fans_in_once(fanout_app, procs, logs, wait_until, child_seconds) -> None:
    app = fanout_app.app
    procs.env["FANOUT_CHILD_SECONDS"] = child_seconds
    reducer = procs.spawn(concurrency=2, pool="reduce")  # never killed: a reduce body is never cut short
    event_id = app.send("fanout.start", {"count": N_CHILDREN}, id="fanout-crash-1")
    child_worker = procs.spawn(concurrency=CONCURRENCY, pool="default")

    def parent():
        runs = app.runs_for_event(event_id)
        return app.get_run(runs[0].id) if runs else None

    def describe() -> str:
        run = parent()
        started = len(logs.started_items())
        return f"parent {run and run.status}, progress {run and run.progress}, {started} items started"

    # kill while children complete: three times along the way, and once more as the last
    # ones start, when their completions race to resume the parent
    kill_points = [60, 140, 220, N_CHILDREN - 4]
    kills = 0
    for point in kill_points:
        wait_until(
            lambda point=point, proc=child_worker: len(logs.started_items()) >= point or proc.poll() is not None,
            timeout=60,
            message=lambda point=point: f"{point} children to start; {describe()}",
        )
        assert child_worker.poll() is None, f"the child worker died on its own:\n{procs.stderr(child_worker)}"
        run = parent()
        if run is not None and run.status == "completed":
            break
        child_worker.send_signal(signal.SIGKILL)
        child_worker.wait(timeout=10)
        kills += 1
        child_worker = procs.spawn(concurrency=CONCURRENCY, pool="default")
    assert kills >= 3, f"only {kills} kills landed before the parent completed: the test is too fast to mean much"

    final = wait_until(
        lambda: (run := parent()) is not None and run.status in ("completed", "failed") and run,
        timeout=120,
        message=describe,
    )
    assert reducer.poll() is None, procs.stderr(reducer)
    assert final.status == "completed", final

    expected = [n * 2 for n in range(N_CHILDREN)]
    digest = fanout_app.outputs_digest(expected)
    reduces = logs.reduces()
    assert len(reduces) == 1, f"the reduce body ran {len(reduces)} times: {reduces}"
    run_id, count, seen_digest, pid = reduces[0]
    assert run_id == final.id
    assert pid == reducer.pid
    assert (count, seen_digest) == (N_CHILDREN, digest), "the reduce did not see every output once, in item order"
    assert final.output == {"count": N_CHILDREN, "sum": sum(expected), "digest": digest}

    children = app.list_runs(function="fan-child", limit=10_000)
    assert len(children) == N_CHILDREN, "a child run was lost or created twice"
    assert Counter(c.status for c in children) == {"completed": N_CHILDREN}
    assert {c.parent_id for c in children} == {final.id}
    assert logs.started_items() == set(range(N_CHILDREN))
    assert final.progress.total == final.progress.completed == N_CHILDREN
    map_step = next(s for s in final.steps if s.id == "children")
    assert map_step.status == "completed"
    # only the runs a killed worker had in flight ran again
    per_child = Counter(r for r, _, _, _ in logs.children())
    repeated = sum(per_child.values()) - N_CHILDREN
    assert repeated <= kills * 2 * CONCURRENCY, f"{repeated} child bodies re-ran after {kills} kills"
    active = [r for r in app.list_runs(limit=10_000) if r.status in ("queued", "running", "waiting")]
    assert active == []

    for proc in (reducer, child_worker):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, procs.stderr(proc)
