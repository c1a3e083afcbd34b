"""The management API: runs (list, filters, pages, detail with steps, logs, cancel, replay),
dead letters (list, redrive), functions, events; and its error shapes (404, 405, 409)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until

from .helpers import STEP_KEYS, assert_accepted, assert_error, assert_run_summary, describe


def send(client: httpx.Client, name: str, data: dict[str, Any] | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"name": name, **extra}
    if data is not None:
        body["data"] = data
    [event_id] = assert_accepted(client.post("/api/v1/events", json=body), 1)
    return event_id


def get_json(client: httpx.Client, path: str, **params: Any) -> Any:
    resp = client.get(path, params=params)
    assert resp.status_code == 200, describe(resp)
    return resp.json()


def all_pages(client: httpx.Client, path: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following ``next`` (sent back as ``cursor``)."""
    pages = []
    cursor = None
    for _ in range(1000):
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        body = get_json(client, path, **query)
        assert set(body) == {key, "next"}, body
        pages.append(body[key])
        cursor = body["next"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and cursor, body
    raise AssertionError(f"{path} never stopped paging")


def run_of(app: Any, event_id: str) -> Any:
    [run] = app.runs_for_event(event_id)
    return run


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- runs ------------------------------------------------------------------------------------------


def test_list_runs_in_a_time_window(server, conveyor_app) -> None:
    client = server.client()
    old = send(client, "user.signup", {"name": "old"})
    [old_run] = get_json(client, "/api/v1/runs", event_id=old)["runs"]
    created = parse_time(old_run["created_at"])
    start = int(created.timestamp() * 1000)
    while int(datetime.now().timestamp() * 1000) <= start + 1:  # ids carry milliseconds
        pass
    middle = datetime.now().astimezone()
    while int(datetime.now().timestamp() * 1000) <= int(middle.timestamp() * 1000) + 1:
        pass
    new = send(client, "user.signup", {"name": "new"})
    for extra in ({}, {"function": "greet"}, {"status": "queued"}):
        after = get_json(client, "/api/v1/runs", since=middle.isoformat(), **extra)["runs"]
        before = get_json(client, "/api/v1/runs", until=middle.isoformat(), **extra)["runs"]
        assert [r["event_id"] for r in after] == [new], extra
        assert [r["event_id"] for r in before] == [old], extra
    unix = get_json(client, "/api/v1/runs", since=str(middle.timestamp()))["runs"]
    assert [r["event_id"] for r in unix] == [new]
    future = get_json(client, "/api/v1/runs", since="30000000000")["runs"]  # year 2920: seconds, not milliseconds
    assert future == []
    for bad in ("yesterday", "2026-13-45", "1e400", "nan", "-5", "inf"):
        assert_error(client.get("/api/v1/runs", params={"since": bad}), 400)


def test_list_runs_filters_by_function_status_and_event(server, conveyor_app) -> None:
    client = server.client()
    greets = [send(client, "user.signup", {"name": f"u{i}"}) for i in range(3)]
    flakies = [send(client, "job.flaky") for _ in range(2)]
    burst = send(client, "burst.item")

    by_function = get_json(client, "/api/v1/runs", function="greet")["runs"]
    assert sorted(r["event_id"] for r in by_function) == sorted(greets)
    assert {r["function_id"] for r in by_function} == {"greet"}
    for run in by_function:
        assert_run_summary(run)

    assert len(get_json(client, "/api/v1/runs", status="queued")["runs"]) == 7
    assert get_json(client, "/api/v1/runs", status="completed")["runs"] == []
    assert sorted(r["function_id"] for r in get_json(client, "/api/v1/runs", event_id=burst)["runs"]) == [
        "burst-a", "burst-b"]

    conveyor_app.app.drain(timeout=30)
    completed = get_json(client, "/api/v1/runs", status="completed", function="greet")["runs"]
    assert sorted(r["event_id"] for r in completed) == sorted(greets)
    failed = get_json(client, "/api/v1/runs", status="failed")["runs"]
    assert sorted(r["event_id"] for r in failed) == sorted(flakies)
    assert {r["pool"] for r in failed} == {"background"}
    assert get_json(client, "/api/v1/runs", function="no-such-function")["runs"] == []


def test_runs_pages_cover_every_run_once_newest_first(server, conveyor_app) -> None:
    client = server.client()
    for i in range(23):
        send(client, "user.signup", {"name": f"p{i}"})
    pages = all_pages(client, "/api/v1/runs", "runs", limit=5)
    assert [len(p) for p in pages][:4] == [5, 5, 5, 5], [len(p) for p in pages]
    listed = [r["id"] for page in pages for r in page]
    assert len(listed) == 23 and len(set(listed)) == 23, listed
    newest_first = [r.id for r in conveyor_app.app.list_runs(limit=1000)]
    assert listed == newest_first
    created = [parse_time(r["created_at"]) for page in pages for r in page]
    assert created == sorted(created, reverse=True)

    default = get_json(client, "/api/v1/runs")
    assert [r["id"] for r in default["runs"]] == newest_first, "the default page (50) holds all 23"
    assert default["next"] is None

    filtered = all_pages(client, "/api/v1/runs", "runs", limit=2, function="greet", status="queued")
    assert [r["id"] for page in filtered for r in page] == newest_first


def test_run_detail_has_its_steps(server, conveyor_app) -> None:
    client = server.client()
    event_id = send(client, "user.signup", {"name": "ada"})
    run_id = run_of(conveyor_app.app, event_id).id
    queued = get_json(client, f"/api/v1/runs/{run_id}")
    assert_run_summary(queued)
    assert (queued["id"], queued["status"], queued["steps"], queued["progress"]) == (run_id, "queued", [], None)
    assert queued["started_at"] is None and queued["ended_at"] is None

    conveyor_app.app.drain(timeout=20)
    run = get_json(client, f"/api/v1/runs/{run_id}")
    assert_run_summary(run)
    assert (run["status"], run["output"], run["error"]) == ("completed", {"greeting": "hi ada"}, None)
    assert (run["function_id"], run["event_id"], run["pool"], run["parent_id"]) == ("greet", event_id, "default", None)
    [step] = run["steps"]
    assert set(step) >= STEP_KEYS, step
    assert (step["id"], step["kind"], step["status"], step["attempts"], step["output"], step["error"]) == (
        "hello", "run", "completed", 1, "hi ada", None)
    assert parse_time(run["created_at"]) <= parse_time(step["started_at"]) <= parse_time(step["ended_at"])
    assert parse_time(run["ended_at"]) >= parse_time(step["ended_at"])


def test_failed_run_detail_shows_the_failed_step(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "job.flaky")).id
    conveyor_app.app.drain(timeout=20)
    run = get_json(client, f"/api/v1/runs/{run_id}")
    assert run["status"] == "failed"
    assert "flaky failed on purpose" in str(run["error"])
    steps = {s["id"]: s for s in run["steps"]}
    assert [s["id"] for s in run["steps"]] == ["prepare", "attempt"]
    assert (steps["prepare"]["status"], steps["prepare"]["output"]) == ("completed", "ready")
    assert (steps["attempt"]["status"], steps["attempt"]["attempts"]) == ("failed", 1)
    assert "flaky failed on purpose" in str(steps["attempt"]["error"])


def test_run_logs(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "user.signup", {"name": "lin"})).id
    conveyor_app.app.drain(timeout=20)
    logs = get_json(client, f"/api/v1/runs/{run_id}/logs")
    assert set(logs) == {"logs"}
    assert any("greeting lin" in str(record) for record in logs["logs"]), logs
    assert_error(client.get("/api/v1/runs/no-such-run/logs"), 404, "not_found")


def test_cancel_a_queued_run_then_again(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "user.signup")).id
    resp = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert resp.status_code == 200, describe(resp)
    assert_run_summary(resp.json())
    assert (resp.json()["id"], resp.json()["status"]) == (run_id, "cancelled")
    assert conveyor_app.app.get_run(run_id).status == "cancelled"

    assert_error(client.post(f"/api/v1/runs/{run_id}/cancel"), 409, "invalid_state")
    conveyor_app.app.drain(timeout=10)
    assert conveyor_app.app.get_run(run_id).status == "cancelled", "a cancelled run never runs"
    assert_error(client.post("/api/v1/runs/no-such-run/cancel"), 404, "not_found")


def test_cancel_a_completed_run_is_a_conflict(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "user.signup")).id
    conveyor_app.app.drain(timeout=20)
    assert_error(client.post(f"/api/v1/runs/{run_id}/cancel"), 409, "invalid_state")
    assert conveyor_app.app.get_run(run_id).status == "completed"


def test_replay_a_failed_run_continues_the_same_run(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "job.flaky")).id
    assert_error(client.post(f"/api/v1/runs/{run_id}/replay"), 409, "invalid_state")  # queued: not ended
    conveyor_app.app.drain(timeout=20)
    assert conveyor_app.app.get_run(run_id).status == "failed"

    resp = client.post(f"/api/v1/runs/{run_id}/replay")
    assert resp.status_code == 200, describe(resp)
    assert (resp.json()["id"], resp.json()["status"]) == (run_id, "queued")
    assert conveyor_app.app.get_run(run_id).status == "queued"
    assert_error(client.post(f"/api/v1/runs/{run_id}/replay"), 409, "invalid_state")

    conveyor_app.flaky["fail"] = False
    conveyor_app.app.drain(timeout=20)
    run = get_json(client, f"/api/v1/runs/{run_id}")
    assert (run["id"], run["status"], run["output"]) == (run_id, "completed", "ok")
    assert conveyor_app.flaky["prepared"] == 1, "the memoized step is kept on replay"
    assert [r.id for r in conveyor_app.app.runs_for_event(run["event_id"])] == [run_id]
    assert_error(client.post(f"/api/v1/runs/{run_id}/replay"), 409, "invalid_state")  # completed
    assert_error(client.post("/api/v1/runs/no-such-run/replay"), 404, "not_found")


def test_replay_a_cancelled_run(server, conveyor_app) -> None:
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "user.signup", {"name": "again"})).id
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    resp = client.post(f"/api/v1/runs/{run_id}/replay")
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["status"] == "queued"
    conveyor_app.app.drain(timeout=20)
    assert conveyor_app.app.get_run(run_id).output == {"greeting": "hi again"}


# ---- dead letters ----------------------------------------------------------------------------------


def test_dead_letters_list_and_redrive_some_then_all(server, conveyor_app) -> None:
    client = server.client()
    send(client, "user.signup")
    run_ids = [run_of(conveyor_app.app, send(client, "job.flaky", {"n": i})).id for i in range(3)]
    conveyor_app.app.drain(timeout=30)

    body = get_json(client, "/api/v1/dead-letters")
    assert set(body) == {"dead_letters", "next"}
    assert sorted(r["id"] for r in body["dead_letters"]) == sorted(run_ids)
    for run in body["dead_letters"]:
        assert_run_summary(run)
        assert (run["status"], run["function_id"]) == ("failed", "flaky")
    assert get_json(client, "/api/v1/dead-letters", function="greet")["dead_letters"] == []
    pages = all_pages(client, "/api/v1/dead-letters", "dead_letters", limit=2)
    assert sorted(r["id"] for page in pages for r in page) == sorted(run_ids)

    resp = client.post("/api/v1/dead-letters/redrive", json={"run_ids": [run_ids[0]]})
    assert resp.status_code == 202, describe(resp)
    assert resp.json()["redriven"] == 1, describe(resp)
    assert conveyor_app.app.get_run(run_ids[0]).status == "queued"
    assert sorted(r["id"] for r in get_json(client, "/api/v1/dead-letters")["dead_letters"]) == sorted(run_ids[1:])

    # A bad id among good ones redrives none of them.
    assert_error(client.post("/api/v1/dead-letters/redrive", json={"run_ids": [run_ids[1], "no-such-run"]}),
                 404, "not_found")
    assert_error(client.post("/api/v1/dead-letters/redrive", json={"run_ids": [run_ids[1], run_ids[0]]}),
                 409, "invalid_state")
    assert conveyor_app.app.get_run(run_ids[1]).status == "failed"

    resp = client.post("/api/v1/dead-letters/redrive")
    assert resp.status_code == 202, describe(resp)
    assert resp.json()["redriven"] == 2, describe(resp)
    assert get_json(client, "/api/v1/dead-letters")["dead_letters"] == []

    conveyor_app.flaky["fail"] = False
    conveyor_app.app.drain(timeout=30)
    assert [conveyor_app.app.get_run(r).status for r in run_ids] == ["completed"] * 3
    assert conveyor_app.flaky["prepared"] == 3, "redrive keeps the memoized steps"


def test_redrive_by_function(server, conveyor_app) -> None:
    client = server.client()
    run_ids = [run_of(conveyor_app.app, send(client, "job.flaky")).id for _ in range(2)]
    conveyor_app.app.drain(timeout=30)
    resp = client.post("/api/v1/dead-letters/redrive", json={"function": "greet"})
    assert resp.status_code == 202, describe(resp)
    assert resp.json()["redriven"] == 0, describe(resp)
    resp = client.post("/api/v1/dead-letters/redrive", json={"function": "flaky"})
    assert resp.status_code == 202, describe(resp)
    assert resp.json()["redriven"] == 2, describe(resp)
    assert {conveyor_app.app.get_run(r).status for r in run_ids} == {"queued"}


def test_redrive_with_a_rate_is_done_in_the_background(server, conveyor_app) -> None:
    client = server.client()
    run_ids = [run_of(conveyor_app.app, send(client, "job.flaky")).id for _ in range(3)]
    conveyor_app.app.drain(timeout=30)
    resp = client.post("/api/v1/dead-letters/redrive", json={"rate": 100.0})
    assert resp.status_code == 202, describe(resp)
    assert resp.json()["scheduled"] == 3, describe(resp)
    wait_until(lambda: {conveyor_app.app.get_run(r).status for r in run_ids} == {"queued"}, timeout=20,
               message="every dead letter redriven by the background redrive")


def test_redrive_all_of_many_answers_after_the_first_thousand(server, conveyor_app) -> None:
    """Redriving every dead letter does not hold the request for all of them: 1,000 are redriven
    before the answer, the rest right after it, in the background."""
    client = server.client()
    for start in (0, 1000):
        batch = [{"name": "job.flaky", "id": f"many-{i}"} for i in range(start, min(start + 1000, 1050))]
        assert_accepted(client.post("/api/v1/events", json=batch), len(batch))
    conveyor_app.app.drain(timeout=120)
    assert conveyor_app.app._engine().count_runs("failed") == 1050
    resp = client.post("/api/v1/dead-letters/redrive")
    assert resp.status_code == 202, describe(resp)
    answer = resp.json()
    assert (answer["redriven"], answer["scheduled"], len(answer["run_ids"])) == (1000, 50, 1050)
    wait_until(lambda: conveyor_app.app._engine().count_runs("queued") == 1050, timeout=60,
               message="the 50 scheduled dead letters redriven in the background")
    assert conveyor_app.app._engine().count_runs("failed") == 0


def test_redrive_with_a_rate_checks_every_id_first(server, conveyor_app) -> None:
    """Like the immediate redrive, a paced one with an unknown id among its ids is a 404 that
    redrives none of them (nothing is scheduled)."""
    client = server.client()
    run_id = run_of(conveyor_app.app, send(client, "job.flaky")).id
    conveyor_app.app.drain(timeout=30)
    resp = client.post("/api/v1/dead-letters/redrive", json={"run_ids": [run_id, "no-such-run"], "rate": 50.0})
    assert_error(resp, 404, "not_found")
    resp = client.post("/api/v1/dead-letters/redrive", json={"run_ids": ["no-such-run"], "rate": 50.0})
    assert_error(resp, 404, "not_found")
    assert conveyor_app.app.get_run(run_id).status == "failed"


# ---- functions and events --------------------------------------------------------------------------


def test_functions_lists_triggers_and_pools(server) -> None:
    body = get_json(server.client(), "/api/v1/functions")
    assert set(body) == {"functions"}
    functions = {f["id"]: f for f in body["functions"]}
    assert set(functions) >= {"greet", "flaky", "echo", "burst-a", "burst-b"}, functions
    for f in functions.values():
        assert set(f) >= {"id", "pool", "triggers", "cron", "retries", "concurrency"}, f
    assert (functions["greet"]["pool"], functions["greet"]["triggers"]) == ("default", ["user.signup"])
    assert (functions["greet"]["retries"], functions["greet"]["cron"]) == (0, None)
    assert functions["greet"]["concurrency"] is None
    assert functions["flaky"]["pool"] == "background"
    assert sorted(functions["burst-b"]["triggers"]) == ["burst.item", "burst.other"]
    limit = functions["burst-b"]["concurrency"]
    assert limit == 2 or (isinstance(limit, dict) and limit.get("limit") == 2), limit


def test_events_list_and_detail(server, conveyor_app) -> None:
    client = server.client()
    echo_ids = [send(client, "echo.me", {"i": i}) for i in range(7)]
    burst_id = send(client, "burst.item", {"b": 1})

    pages = all_pages(client, "/api/v1/events", "events", limit=3)
    events = [e for page in pages for e in page]
    assert sorted(e["id"] for e in events) == sorted([*echo_ids, burst_id])
    for e in events:
        assert set(e) >= {"id", "name", "data", "ts"}, e
    stamps = [parse_time(e["ts"]) if isinstance(e["ts"], str) else e["ts"] for e in events]
    assert stamps == sorted(stamps, reverse=True), "newest first"
    assert events[0]["id"] == burst_id

    named = [e for page in all_pages(client, "/api/v1/events", "events", name="echo.me", limit=4) for e in page]
    assert [e["id"] for e in named] == [e["id"] for e in events if e["name"] == "echo.me"]
    assert {e["data"]["i"] for e in named} == set(range(7))

    detail = get_json(client, f"/api/v1/events/{burst_id}")
    assert (detail["id"], detail["name"], detail["data"]) == (burst_id, "burst.item", {"b": 1})
    assert sorted(r["function_id"] for r in detail["runs"]) == ["burst-a", "burst-b"]
    for run in detail["runs"]:
        assert_run_summary(run)
        assert run["event_id"] == burst_id
    assert_error(client.get("/api/v1/events/no-such-event"), 404, "not_found")


# ---- error shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/runs/no-such-run"),
    ("GET", "/api/v1/events/no-such-event"),
    ("POST", "/api/v1/runs/no-such-run/cancel"),
    ("POST", "/api/v1/runs/no-such-run/replay"),
    ("GET", "/api/v1/no-such-route"),
    ("GET", "/no-such-page"),
])
def test_unknown_things_are_404(server, method, path) -> None:
    assert_error(server.client().request(method, path), 404, "not_found")


@pytest.mark.parametrize("method, path", [
    ("PUT", "/api/v1/events"),
    ("DELETE", "/api/v1/runs/some-run"),
    ("GET", "/api/v1/runs/some-run/cancel"),
    ("GET", "/api/v1/runs/some-run/replay"),
    ("GET", "/api/v1/dead-letters/redrive"),
    ("POST", "/api/v1/runs"),
    ("POST", "/api/v1/functions"),
    ("POST", "/healthz"),
])
def test_wrong_methods_are_405(server, method, path) -> None:
    assert_error(server.client().request(method, path), 405, "method_not_allowed")


def test_healthz(server) -> None:
    resp = server.client().get("/healthz")
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["status"] == "ok"


def test_openapi_document_names_the_routes(server) -> None:
    doc = get_json(server.client(), "/openapi.json")
    assert str(doc["openapi"]).startswith("3.")
    for path in ("/api/v1/events", "/api/v1/runs", "/api/v1/runs/{id}", "/api/v1/dead-letters",
                 "/api/v1/dead-letters/redrive", "/api/v1/functions"):
        assert any(p.replace("run_id", "id").replace("event_id", "id") == path for p in doc["paths"]), (
            path, sorted(doc["paths"]))
