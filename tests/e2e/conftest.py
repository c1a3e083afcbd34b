"""Real worker processes for the crash tests.

Workers are started with the real CLI (``python -m conveyor.cli.main worker
tests/apps/crash_app.py:app --database URL``); if that module has no ``worker``
command yet, with a ``python -c`` that loads the app and runs ``app.worker().run()``.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import Workers

APPS = Path(__file__).resolve().parent.parent / "apps"
CRASH_APP = APPS / "crash_app.py"
_module_names = itertools.count()


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
    pool = Workers(db_url, crash_env, tmp_path, CRASH_APP)
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
