"""What the pages of :mod:`conveyor.dashboard.pages` read, on a real SQLite file: how many
queries a page costs, and what it computes from what it read."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import sqlite_url

from conveyor.dashboard import pages
from conveyor.dashboard.pages import Pages, RunItem, TtlCache
from conveyor.dashboard.params import WINDOWS
from conveyor.dashboard.routes import create_router
from conveyor.engine.engine import Engine
from conveyor.engine.registry import Registry
from conveyor.records import Failed, NewEvent, StepWrite, Suspended
from conveyor.storage.base import FunctionSpec, JobResult, RunRow, Storage
from conveyor.storage.factory import open_storage
from conveyor.types import Backoff


class Counted:
    """A storage whose calls are counted by verb (the calls themselves go to the real one)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._storage, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return call


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Counted]:
    real = open_storage(sqlite_url(tmp_path / "dash.db"))
    real.migrate()
    real.functions_sync([FunctionSpec("one", "default", ("go",), retries=0),
                         FunctionSpec("two", "default", ("go",), retries=0)])
    yield Counted(real)
    real.close()


def pages_over(storage: Counted) -> Pages:
    return Pages(Engine(storage, Registry(), backoff=Backoff()))  # type: ignore[arg-type]


def test_a_page_of_events_reads_their_runs_in_one_query(storage: Counted) -> None:
    now = time.time()
    storage.events_send([NewEvent(f"e{i}", "go" if i % 2 else "nobody.listens", json.dumps({"i": i}), now + i)
                         for i in range(20)])
    storage.calls.clear()
    page = pages_over(storage).events(None, None, internal=False)
    assert storage.calls == {"events_list": 1, "runs_of_events": 1}
    assert [item["event"]["id"] for item in page.items] == [f"e{i}" for i in reversed(range(20))]
    for item in page.items:
        started = sorted(r.row.function_id for r in item["runs"])
        assert started == (["one", "two"] if int(item["event"]["id"][1:]) % 2 else []), item


@pytest.mark.parametrize("path", ["/runs", "/dead-letters", "/runs?status=nonsense"])
def test_a_live_refresh_does_not_read_the_function_ids_only_the_header_shows(storage: Counted, path: str) -> None:
    app = FastAPI()
    app.include_router(create_router(pages_over(storage).engine, api_tokens=(), auth=False))

    async def get(headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as client:
            return await client.get(path, headers=headers)

    whole = asyncio.run(get({}))
    assert 'name="function"' in whole.text and storage.calls["functions_list"] == 1
    storage.calls.clear()
    live = asyncio.run(get({"X-Conveyor-Partial": "1"}))
    assert live.status_code == whole.status_code and 'name="function"' not in live.text
    assert storage.calls["functions_list"] == 0, storage.calls


def test_the_run_page_reads_the_steps_once_and_shows_when_a_step_wakes(storage: Counted) -> None:
    now = time.time()
    storage.events_send([NewEvent("e", "go", "{}", now)])
    job = next(j for j in storage.jobs_claim("w", ("default",), ["one"], 10, 30.0) if j.function_id == "one")
    nap = StepWrite("nap", "sleep", "sleeping", 0, 0, wake_at=now + 3600, started_at=now)
    assert storage.jobs_commit([JobResult(job.run_id, job.token, "one", steps=[nap],
                                          outcome=Suspended(now + 3600, "sleep"))]) == [True]
    storage.calls.clear()
    page = pages_over(storage).run(job.run_id, now)
    assert storage.calls["steps_list"] == 1, storage.calls
    [bar] = page["timeline"].bars
    assert bar.wake_at == pytest.approx(now + 3600)
    [step] = page["run"].to_dict()["steps"]
    assert step["wake_at"] == datetime.fromtimestamp(now + 3600, UTC).isoformat()


def test_the_pages_say_the_windows_and_the_cache_time_they_use(storage: Counted,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "STATS_TTL", 3.0)
    runs, functions = asyncio.run(_pages(storage, "/runs", "/"))
    for value, window in WINDOWS.items():
        assert f'<option value="{value}" >{window.label}</option>' in runs
    assert "recomputed at most every 3 seconds" in functions


async def _pages(storage: Counted, *paths: str) -> list[str]:
    app = FastAPI()
    app.include_router(create_router(pages_over(storage).engine, api_tokens=(), auth=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as client:
        return [(await client.get(path)).text for path in paths]


def test_the_pagers_of_events_and_dead_letters_keep_the_filters(storage: Counted) -> None:
    now = time.time()
    storage.events_send([NewEvent(f"e{i:02d}", "go", "{}", now + i) for i in range(55)])
    jobs = storage.jobs_claim("w", ("default",), ["one"], 100, 30.0)
    storage.jobs_commit([JobResult(j.run_id, j.token, "one", outcome=Failed({"type": "X"})) for j in jobs])
    events, dead = asyncio.run(_pages(storage, "/events?name=go&internal=1", "/dead-letters?function=one"))
    older = re.search(r'href="(/events\\?[^"]+)" rel="next"', events)
    assert older and older.group(1).startswith("/events?name=go&amp;internal=1&amp;cursor="), older
    older = re.search(r'href="(/dead-letters\\?[^"]+)" rel="next"', dead)
    assert older and older.group(1).startswith("/dead-letters?function=one&amp;cursor="), older
    rest, = asyncio.run(_pages(storage, unescape(older.group(1))))
    assert rest.count('name="selected"') == 5 and 'rel="next"' not in rest


def test_a_runs_duration_so_far_is_read_on_the_pages_clock() -> None:
    running = RunItem(RunRow("r", "one", "e", "running", "default", None, None, None, 100.0, 101.0, None))
    assert running.seconds(now=106.0) == 5.0  # the database's now, not this process's clock
    ended = RunItem(RunRow("r", "one", "e", "completed", "default", None, None, None, 100.0, 101.0, 103.5))
    assert ended.seconds(now=1e9) == 2.5
    assert RunItem(RunRow("r", "one", "e", "queued", "default", None, None, None, 100.0, None, None)).seconds(0) is None


def test_a_pool_link_leads_to_its_section_whatever_its_name(storage: Counted) -> None:
    storage.functions_sync([FunctionSpec("odd", "a b/c#d", ("odd.go",), retries=0)])
    functions, pools = asyncio.run(_pages(storage, "/", "/pools"))
    target = re.search(r'href="/pools#([^"]+)">a b/c#d<', functions)
    assert target and f'id="{target.group(1)}"' in pools, target
    assert not re.search(r"\s", target.group(1))  # an id has no spaces


def test_the_stats_cache_computes_again_once_its_time_is_up() -> None:
    clock = [1000.0]
    cache = TtlCache(10.0, clock=lambda: clock[0])
    computed: list[str] = []

    def compute(key: str) -> int:
        computed.append(key)
        return len(computed)

    assert cache.get("hour", lambda: compute("hour")) == 1
    clock[0] += 9.9
    assert cache.get("hour", lambda: compute("hour")) == 1  # still fresh: not computed again
    assert cache.get("day", lambda: compute("day")) == 2  # each key has its own value
    clock[0] += 0.1
    assert cache.get("hour", lambda: compute("hour")) == 3  # 10 s after it was computed
    assert computed == ["hour", "day", "hour"]
