"""Fixtures of the dashboard tests: a live ``conveyor dev`` process per backend, with real runs.

* ``demo``: one open dev server per backend for the whole package, seeded with a completed
  run, a failed run, a parent with 60 children (12 of them failed) and a dead letter. Tests
  that change runs start their own, so they never disturb one another.
* ``auth_demo``: a dev server with ``--api-token`` and ``--event-key`` (SQLite: auth does
  not depend on the database).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import sqlite_url
from tests.server.helpers import API_TOKEN, EVENT_KEY, Server
from tests.support.postgres import fresh_schema

from .helpers import Browser, run_of, send, start_dev

ORDER = {
    "order_id": "A-1001", "customer": "ada@example.com",
    "items": [{"sku": "sku-1", "qty": 2, "unit": 9.5}, {"sku": "sku-2", "qty": 1, "unit": 24}],
}
BATCH_SIZE = 60  # more than a page of children (50)
BATCH_FAILED = BATCH_SIZE // 5  # every item divisible by 5 fails


@dataclass
class Demo:
    server: Server
    backend: str
    workdir: Path
    events: dict[str, str]  # what -> event id
    runs: dict[str, dict[str, Any]]  # what -> the run (API JSON) once it ended

    def browser(self) -> Browser:
        return Browser(self.server)


def seed(server: Server) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    events = {
        "order": send(server, "order.placed", ORDER),
        "report": send(server, "report.requested", {"template": "monthly"}),
        "batch": send(server, "batch.requested", {"n": BATCH_SIZE}),
        "sync": send(server, "inventory.sync", {}),
    }
    runs = {what: run_of(server, event_id) for what, event_id in events.items()}
    assert runs["order"]["status"] == "completed", runs["order"]
    assert runs["report"]["status"] == "failed", runs["report"]
    assert runs["batch"]["status"] == "completed", runs["batch"]
    assert runs["sync"]["status"] == "failed", runs["sync"]
    return events, runs


@contextlib.contextmanager
def dev_server(backend: str, workdir: Path, *args: str, token: str | None = None) -> Iterator[tuple[Server, str]]:
    database = fresh_schema() if backend == "postgres" else contextlib.nullcontext(sqlite_url(workdir / "conveyor.db"))
    with database as db_url:
        server = start_dev(db_url, workdir, *args, token=token)
        try:
            yield server, db_url
            code = server.stop(signal.SIGTERM)
            assert code == 0, f"conveyor dev exited with {code} after SIGTERM:\n{server.stderr()}"
        finally:
            server.kill()


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"dashboard-{backend}")
    with dev_server(backend, workdir) as (server, _):
        events, runs = seed(server)
        yield Demo(server, backend, workdir, events, runs)


@pytest.fixture(scope="package")
def auth_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("dashboard-auth")
    args = ("--api-token", API_TOKEN, "--event-key", EVENT_KEY)
    with dev_server("sqlite", workdir, *args, token=API_TOKEN) as (server, _):
        events = {"order": send(server, "order.placed", ORDER)}
        yield Demo(server, "sqlite", workdir, events, {"order": run_of(server, events["order"])})
