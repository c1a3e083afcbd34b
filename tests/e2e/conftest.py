"""Real worker processes for the crash tests.

Workers are started with the real CLI (``python -m conveyor.cli.main worker
tests/apps/crash_app.py:app --database URL``); if that module has no ``worker``
command yet, with a ``python -c`` that loads the app and runs ``app.worker().run()``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).resolve().parent.parent / "apps"
CRASH_APP = APPS / "crash_app.py"
_module_names = itertools.count()


def _cli_has_worker() -> bool:
    try:
        from conveyor.cli.main import build_parser
    except ImportError:
        return False
    try:
        build_parser().parse_args(["worker", "x:app"])
    except SystemExit:
        return False
    return True


FALLBACK_WORKER = (
    "import sys, conveyor; app = conveyor.load_app(sys.argv[1]); app.worker(concurrency=int(sys.argv[2])).run()"
)


@dataclass
class StepLog:
    """The lines the crash app's step bodies append: one per step-body execution."""

    directory: Path

    def lines(self) -> list[tuple[str, str, int, int]]:
        out = []
        for path in sorted(self.directory.glob("steps-*.log")):
            for raw in path.read_text().splitlines():
                parts = raw.split()
                if len(parts) == 4:  # a SIGKILL cannot tear a single O_APPEND write
                    run_id, step, attempt, pid = parts
                    out.append((run_id, step, int(attempt), int(pid)))
        return out

    def count(self) -> int:
        return len(self.lines())

    def executions(self) -> Counter[tuple[str, str]]:
        return Counter((run_id, step) for run_id, step, _, _ in self.lines())

    def pids(self, run_id: str, step: str) -> list[int]:
        return [p for r, s, _, p in self.lines() if (r, s) == (run_id, step)]


@dataclass
class Workers:
    db_url: str
    env: dict[str, str]
    out_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, concurrency: int = 4, **env: str) -> subprocess.Popen[bytes]:
        spec = f"{CRASH_APP}:app"
        if _cli_has_worker():
            argv = [
                sys.executable,
                "-m",
                "conveyor.cli.main",
                "worker",
                spec,
                "--database",
                self.db_url,
                "--concurrency",
                str(concurrency),
            ]
        else:
            argv = [sys.executable, "-c", FALLBACK_WORKER, spec, str(concurrency)]
        n = len(self.procs)
        with (
            open(self.out_dir / f"worker-{n}.out", "wb") as out,
            open(self.out_dir / f"worker-{n}.err", "wb") as err,
        ):
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env, **env},
                stdout=out,
                stderr=err,
                cwd=str(APPS.parent.parent),
            )
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


@pytest.fixture
def step_log(tmp_path: Path) -> StepLog:
    directory = tmp_path / "steps"
    directory.mkdir()
    return StepLog(directory)


@pytest.fixture
def crash_env(db_url: str, step_log: StepLog) -> dict[str, str]:
    return {
        "CONVEYOR_DATABASE_URL": db_url,
        "CRASH_LOG_DIR": str(step_log.directory),
        "CRASH_LEASE_SECONDS": "1.0",
        "CRASH_STEP_SECONDS": "0.02",
        "CRASH_SLOW_SECONDS": "1.0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def workers(db_url: str, crash_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(db_url, crash_env, tmp_path)
    yield pool
    pool.kill_all()


@pytest.fixture
def crash_app(monkeypatch: pytest.MonkeyPatch, crash_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """The crash app in this process (same code, same database), to send and inspect.

    A factory: call it with env overrides (e.g. the lease) before building the app.
    """
    apps: list[Any] = []

    def load(**env: str) -> Any:
        for key, value in {**crash_env, **env}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("CRASH_LOG_DIR")  # this process never runs step bodies
        name = f"crash_app_under_test_{next(_module_names)}"
        spec = importlib.util.spec_from_file_location(name, CRASH_APP)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        apps.append(module.app)
        return module.app

    yield load
    for app in apps:
        app.close()
