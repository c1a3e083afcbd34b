"""Checks shared by the crash tests (public API only)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent

#: The steps of the crash app's ``three-steps`` function, in order.
STEPS = ["one", "two", "three"]


def completed(app: Any, function: str) -> int:
    return len(app.list_runs(function=function, status="completed", limit=100_000))


def check_runs_committed_once(app: Any, event_ids: list[str]) -> dict[str, int]:
    """Every event has one completed run whose steps each committed once; returns
    run id -> event number."""
    run_ids = {}
    for i, event_id in enumerate(event_ids):
        runs = app.runs_for_event(event_id)
        assert len(runs) == 1, f"event {event_id} has {len(runs)} runs"
        run = app.get_run(runs[0].id)
        assert run.status == "completed", run
        assert run.output == {"n": i, "out": i + 3}, run
        assert [s.id for s in run.steps] == STEPS, f"step records of {run.id}: {run.steps}"
        assert [s.status for s in run.steps] == ["completed"] * 3
        assert [s.output for s in run.steps] == [i + 1, i + 2, i + 3]
        run_ids[run.id] = i
    return run_ids


@dataclass
class Workers:
    """Real ``conveyor worker`` processes of one app, their output kept per process."""

    db_url: str
    env: dict[str, str]
    out_dir: Path
    app: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, concurrency: int = 4, pool: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "conveyor.cli.main", "worker", f"{self.app}:app",
                "--database", self.db_url, "--concurrency", str(concurrency)]
        if pool is not None:
            argv += ["--pool", pool]
        n = len(self.procs)
        with open(self.out_dir / f"worker-{n}.out", "wb") as out, open(self.out_dir / f"worker-{n}.err", "wb") as err:
            proc = subprocess.Popen(argv, env={**os.environ, **self.env, **env}, stdout=out, stderr=err, cwd=str(ROOT))
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        n = self.procs.index(proc)
        return (self.out_dir / f"worker-{n}.err").read_text(errors="replace")[-3000:]

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
