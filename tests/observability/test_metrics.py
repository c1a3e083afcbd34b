"""``GET /metrics`` of real processes, parsed with Prometheus's text parser, against what the
database says: a ``conveyor dev`` process (server and worker in one), a ``conveyor server``
with tokens or without its database, and a ``conveyor worker`` with ``--metrics-port``."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import FAST_BACKOFF_KWARGS, wait_until
from tests.server.helpers import API_TOKEN, EVENT_KEY, assert_error, query, start_server

import conveyor

from .helpers import APP, Scrape, scrape, spawn, start_dev

OBS_FUNCTIONS = ("ok", "flaky", "doomed", "fan", "square")
TERMINAL = "('completed', 'failed', 'cancelled')"


def by_function(db_url: str, where: str) -> dict[str, float]:
    rows = query(db_url, f"SELECT function_id, count(*) FROM conveyor_runs WHERE {where} GROUP BY function_id")
    return {fid: float(n) for fid, n in rows}


def ended_steps(db_url: str) -> dict[str, float]:
    """Steps that ended in an invocation, by function (map, invoke and wait steps end in the database)."""
    rows = query(db_url, "SELECT r.function_id, count(*) FROM conveyor_steps s JOIN conveyor_runs r ON r.id = s.run_id"
                         " WHERE s.ended_at IS NOT NULL AND s.kind NOT IN ('map', 'invoke', 'wait_for_event')"
                         " GROUP BY r.function_id")
    return {fid: float(n) for fid, n in rows}


def execute(db_url: str, sql: str) -> None:
    """Run a statement on the database itself (not through any process under test)."""
    if db_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=30)) as conn:
            conn.execute(sql)
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as pg:
            pg.execute(sql)


def park_pool(db_url: str) -> Any:
    """An app of the test process whose ``parked`` function (pool ``idle``) no worker serves."""
    app = conveyor.Conveyor("park", database=db_url, backoff=conveyor.Backoff(**FAST_BACKOFF_KWARGS))

    @app.function(on="obs.parked", pool="idle")
    def parked(ctx: conveyor.Context) -> None:
        raise AssertionError("no worker serves the idle pool")

    app.migrate()
    return app


def test_dev_metrics_agree_with_the_runs_the_database_holds(db_url: str, tmp_path: Path) -> None:
    parking = park_pool(db_url)
    proc, url = start_dev(tmp_path, db_url)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            batch = ([{"name": "obs.ok"}] * 3 + [{"name": "obs.flaky"}] * 2 + [{"name": "obs.doomed"}] * 2
                     + [{"name": "obs.fan", "data": {"items": [1, 2, 3]}}])
            assert http.post("/api/v1/events", json=batch).status_code == 202
            for _ in range(2):
                assert http.post("/api/v1/events", json={"name": "obs.parked"}).status_code == 202
            assert_error(http.post("/api/v1/events", content=b"{not json"), 400, "invalid_json")
            bad = [{"name": "obs.ok"}, {"name": ""}, {"name": "obs.ok"}]
            assert_error(http.post("/api/v1/events", json=bad), 422, "invalid_input")

        def all_ended() -> bool:
            rows = query(db_url, f"SELECT count(*) FROM conveyor_runs WHERE status IN {TERMINAL}")
            return rows[0][0] == 11  # 3 ok, 2 flaky, 2 doomed, 1 fan and its 3 squares

        wait_until(all_ended, 60, lambda: f"every run to end; dev stderr:\n{proc.stderr()[-3000:]}")

        def counted() -> Scrape | None:  # the counters move just after the commit the database shows
            m = scrape(url + "/metrics")
            completed = sum(m.by("conveyor_runs_completed_total", "function").values())
            return m if completed + sum(m.by("conveyor_runs_failed_total", "function").values()) == 11 else None

        m = wait_until(counted, 30, "the scrape to count every ended run")
    finally:
        code = proc.stop()
        parking.close()
    assert code == 0, proc.stderr()[-3000:]

    assert m.by("conveyor_runs_started_total", "function") == by_function(db_url, "started_at IS NOT NULL")
    assert m.by("conveyor_runs_completed_total", "function") == by_function(db_url, "status = 'completed'") == {
        "ok": 3, "flaky": 2, "fan": 1, "square": 3}
    assert m.by("conveyor_runs_failed_total", "function") == by_function(db_url, "status = 'failed'") == {
        "doomed": 2}
    assert m.by("conveyor_step_duration_seconds_count", "function") == ended_steps(db_url)
    assert m.by("conveyor_step_duration_seconds_bucket", "function", le="+Inf") == ended_steps(db_url)
    assert m.by("conveyor_step_duration_seconds_count", "kind") == {"run": sum(ended_steps(db_url).values())}
    assert m.by("conveyor_step_retries_total", "function") == {"flaky": 2}

    assert m.value("conveyor_events_accepted_total") == 10
    assert query(db_url, "SELECT count(*) FROM conveyor_events WHERE name LIKE 'obs.%'") == [(10,)]
    assert m.by("conveyor_events_rejected_total", "reason") == {"invalid_json": 1, "invalid_input": 3}

    assert m.value("conveyor_dead_letters") == 2 == query(
        db_url, "SELECT count(*) FROM conveyor_runs WHERE status = 'failed'")[0][0]
    assert m.by("conveyor_queue_depth", "pool") == {"default": 0, "idle": 2}
    ages = m.by("conveyor_oldest_due_job_age_seconds", "pool")
    assert ages["default"] == 0 and 0 < ages["idle"] < 600
    assert m.by("conveyor_workers", "pool") == {"default": 1, "idle": 0}  # the dev process's worker
    assert m.value("conveyor_scrape_errors_total") == 0
    assert m.value("conveyor_process_resident_memory_bytes") is not None
    assert all(name.startswith("conveyor_") for name in m.samples)


def test_metrics_need_an_api_token_when_the_server_has_keys(db_url: str, tmp_path: Path) -> None:
    server = start_server(db_url, tmp_path, "--event-key", EVENT_KEY, "--api-token", API_TOKEN)
    try:
        assert_error(httpx.get(server.url + "/metrics", timeout=30), 401, "unauthorized")
        event_key = {"Authorization": f"Bearer {EVENT_KEY}"}
        assert_error(httpx.get(server.url + "/metrics", headers=event_key, timeout=30), 401, "unauthorized")
        m = scrape(server.url + "/metrics", API_TOKEN)
        assert m.value("conveyor_dead_letters") == 0
    finally:
        assert server.stop() == 0, server.stderr()


def test_a_scrape_without_the_database_answers_with_the_counters_alone(db_url: str, tmp_path: Path) -> None:
    parking = park_pool(db_url)
    server = start_server(db_url, tmp_path)
    try:
        resp = httpx.post(server.url + "/api/v1/events", json={"name": "obs.parked"}, timeout=30)
        assert resp.status_code == 202
        assert scrape(server.url + "/metrics").by("conveyor_queue_depth", "pool") == {"idle": 1}
        execute(db_url, "DROP TABLE conveyor_jobs")  # the gauges' reads fail from now on
        m = scrape(server.url + "/metrics")
        assert "conveyor_queue_depth" not in m.families and "conveyor_dead_letters" not in m.families
        assert m.value("conveyor_events_accepted_total") == 1
        assert m.value("conveyor_scrape_errors_total") == 1
        assert "database gauges could not be read" in server.stderr()
    finally:
        server.stop()
        parking.close()


def test_a_worker_serves_its_own_counters_on_its_metrics_port(db_url: str, tmp_path: Path) -> None:
    worker = spawn(tmp_path, "worker", APP, "--database", db_url, "--metrics-port", "0")
    sender = conveyor.Conveyor("sender", database=db_url)
    try:
        url = worker.wait_for(r"metrics on (http://[^\s\"]+)").group(1)
        worker.wait_for("serving pools")  # its functions are registered
        sent = [sender.send("obs.ok"), sender.send("obs.ok"), sender.send("obs.doomed")]
        wait_until(lambda: all(r.status in ("completed", "failed") for e in sent for r in sender.runs_for_event(e))
                   and all(sender.runs_for_event(e) for e in sent), 60, "the worker to run the three runs")
        m: Scrape = scrape(url)
    finally:
        code = worker.stop()
        sender.close()
    assert code == 0, worker.stderr()[-3000:]
    assert m.by("conveyor_runs_started_total", "function") == {"ok": 2, "doomed": 1}
    assert m.by("conveyor_runs_completed_total", "function") == {"ok": 2}
    assert m.by("conveyor_runs_failed_total", "function") == {"doomed": 1}
    assert m.by("conveyor_step_duration_seconds_count", "function") == {"ok": 4, "doomed": 1}
    assert "conveyor_queue_depth" not in m.families  # the database's gauges are the server's to serve


@pytest.mark.backends("sqlite")
def test_a_worker_refuses_a_metrics_port_it_cannot_bind(db_url: str, tmp_path: Path) -> None:
    first = spawn(tmp_path, "worker", APP, "--database", db_url, "--metrics-port", "0")
    try:
        port = first.wait_for(r"metrics on http://[^\s:]+:(\d+)").group(1)
        second = spawn(tmp_path, "worker", APP, "--database", db_url, "--metrics-port", port)
        assert second.proc.wait(60) == 1
        assert f"cannot serve metrics on 127.0.0.1:{port}" in second.stderr()
    finally:
        assert first.stop() == 0
