"""``POST /api/v1/events``: 202 only once durable, ids in order, idempotent ids, runs started."""

from __future__ import annotations

import threading

from tests.conftest import wait_until

from .helpers import assert_accepted, assert_error, assert_run_summary, counts, describe, query


def test_single_event_is_accepted_with_its_id_and_starts_its_run(server, conveyor_app) -> None:
    client = server.client()
    resp = client.post("/api/v1/events", json={"name": "user.signup", "data": {"name": "ada"}})
    [event_id] = assert_accepted(resp, 1)

    runs = conveyor_app.app.runs_for_event(event_id)
    assert [(r.function_id, r.status) for r in runs] == [("greet", "queued")]

    listed = client.get("/api/v1/runs", params={"event_id": event_id})
    assert listed.status_code == 200, describe(listed)
    body = listed.json()
    assert set(body) == {"runs", "next"}, body
    assert [r["id"] for r in body["runs"]] == [runs[0].id]
    assert body["next"] is None
    summary = body["runs"][0]
    assert_run_summary(summary)
    assert (summary["function_id"], summary["event_id"], summary["status"]) == ("greet", event_id, "queued")

    conveyor_app.app.drain(timeout=20)
    run = conveyor_app.app.get_run(runs[0].id)
    assert run.status == "completed", run
    assert run.output == {"greeting": "hi ada"}


def test_batch_returns_ids_in_order_given_and_generated(server, conveyor_app) -> None:
    batch = [
        {"name": "echo.me", "data": {"n": 0}, "id": "batch-0"},
        {"name": "echo.me", "data": {"n": 1}},
        {"name": "echo.me", "data": {"n": 2}, "id": "batch-2"},
        {"name": "user.signup", "data": {"name": "bo"}},
    ]
    ids = assert_accepted(server.client().post("/api/v1/events", json=batch), 4)
    assert ids[0] == "batch-0"
    assert ids[2] == "batch-2"
    assert len(set(ids)) == 4, ids

    conveyor_app.app.drain(timeout=20)
    for n in range(3):
        [run] = conveyor_app.app.runs_for_event(ids[n])
        assert run.function_id == "echo"
        assert run.output == {"id": ids[n], "name": "echo.me", "data": {"n": n}}, "ids are answered in body order"
    [run] = conveyor_app.app.runs_for_event(ids[3])
    assert run.output == {"greeting": "hi bo"}


def test_a_given_id_is_idempotent(server, conveyor_app) -> None:
    client = server.client()
    first = {"name": "echo.me", "data": {"v": 1}, "id": "order-42"}
    assert assert_accepted(client.post("/api/v1/events", json=first)) == ["order-42"]
    before = counts(server.db_url)

    again = {"name": "echo.me", "data": {"v": 2}, "id": "order-42"}  # same id, other data: ignored
    assert assert_accepted(client.post("/api/v1/events", json=again)) == ["order-42"]
    assert assert_accepted(client.post("/api/v1/events", json=[again, first])) == ["order-42", "order-42"]
    assert counts(server.db_url) == before, "a resent id stores no new event and starts no new run"

    runs = conveyor_app.app.runs_for_event("order-42")
    assert len(runs) == 1, runs
    conveyor_app.app.drain(timeout=20)
    assert conveyor_app.app.get_run(runs[0].id).output["data"] == {"v": 1}, "the first event is the one kept"


def test_a_repeated_id_inside_one_batch_is_stored_once(server, conveyor_app) -> None:
    batch = [{"name": "echo.me", "id": "dup"}, {"name": "echo.me", "id": "dup"}, {"name": "echo.me", "id": "solo"}]
    assert assert_accepted(server.client().post("/api/v1/events", json=batch)) == ["dup", "dup", "solo"]
    assert counts(server.db_url) == (2, 2)
    assert len(conveyor_app.app.runs_for_event("dup")) == 1


def test_data_defaults_to_an_empty_object(server, conveyor_app) -> None:
    [event_id] = assert_accepted(server.client().post("/api/v1/events", json={"name": "echo.me"}))
    conveyor_app.app.drain(timeout=20)
    [run] = conveyor_app.app.runs_for_event(event_id)
    assert run.output == {"id": event_id, "name": "echo.me", "data": {}}


def test_an_event_nobody_listens_to_is_stored_without_runs(server, conveyor_app) -> None:
    client = server.client()
    [event_id] = assert_accepted(client.post("/api/v1/events", json={"name": "nobody.listens", "data": {"x": 1}}))
    assert conveyor_app.app.runs_for_event(event_id) == []
    resp = client.get(f"/api/v1/events/{event_id}")
    assert resp.status_code == 200, describe(resp)
    body = resp.json()
    assert (body["id"], body["name"], body["data"], body["runs"]) == (event_id, "nobody.listens", {"x": 1}, [])


def test_an_event_that_two_functions_listen_to_starts_one_run_of_each(server, conveyor_app) -> None:
    [event_id] = assert_accepted(server.client().post("/api/v1/events", json={"name": "burst.item"}))
    runs = conveyor_app.app.runs_for_event(event_id)
    assert sorted(r.function_id for r in runs) == ["burst-a", "burst-b"]


def test_accepted_events_survive_a_sigkill_of_the_server(server, fresh_app) -> None:
    """202 means durable: kill -9 right after the answers, then read the events through a new
    app instance (nothing of the old process or of the server is involved)."""
    client = server.client()
    sent = {}
    for n in range(20):
        data = {"n": n, "text": "é✓" * n}
        [event_id] = assert_accepted(client.post("/api/v1/events", json={"name": "echo.me", "data": data}))
        sent[event_id] = data
    batch_ids = assert_accepted(client.post("/api/v1/events", json=[{"name": "echo.me", "data": {"b": i}}
                                                                       for i in range(5)]))
    sent.update({event_id: {"b": i} for i, event_id in enumerate(batch_ids)})
    server.kill()

    reader = fresh_app()
    reader.app.drain(timeout=30)
    for event_id, data in sent.items():
        runs = reader.app.runs_for_event(event_id)
        assert len(runs) == 1, (event_id, runs)
        assert runs[0].status == "completed", runs[0]
        assert runs[0].output == {"id": event_id, "name": "echo.me", "data": data}


def test_concurrent_requests_are_all_durable_and_distinct(server, conveyor_app) -> None:
    """Many clients at once (the server commits them in groups): every 202 id is distinct
    and its event started its run."""
    results: list[list[str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_thread(k: int) -> None:
        with server.client() as client:
            for i in range(20):
                body = {"name": "user.signup", "data": {"name": f"c{k}-{i}"}}
                resp = client.post("/api/v1/events", json=body if i % 2 else [body, body])
                with lock:
                    if resp.status_code == 202:
                        results.append(resp.json()["ids"])
                    else:
                        errors.append(describe(resp))

    threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60 s"
    assert not errors, errors[:5]
    ids = [i for batch in results for i in batch]
    assert len(ids) == 8 * (10 * 1 + 10 * 2)
    assert len(set(ids)) == len(ids), "generated ids are unique"
    assert counts(server.db_url) == (len(ids), len(ids))
    assert sorted(r[0] for r in query(server.db_url, "SELECT event_id FROM conveyor_runs")) == sorted(ids)


def test_a_backlog_over_max_backlog_is_429_with_retry_after(conveyor_app, db_url, start_server) -> None:
    """``--max-backlog N``: once more than N jobs are due and unstarted, the intake answers 429
    with ``Retry-After`` (and stores nothing); once workers catch up, it accepts again."""
    server = start_server(db_url, "--max-backlog", "5")
    client = server.client()
    for i in range(8):
        assert_accepted(client.post("/api/v1/events", json={"name": "user.signup", "data": {"name": f"b{i}"}}))

    probe = {"name": "user.signup", "id": "backlog-probe"}  # one id: a probe that gets in is stored once
    resp = wait_until(lambda: (r := client.post("/api/v1/events", json=probe)).status_code == 429 and r,
                      timeout=10, message="a 429 once the backlog is over --max-backlog (checked once a second)")
    assert_error(resp, 429, "overloaded")
    assert resp.headers.get("retry-after", "").isdigit(), resp.headers
    before = counts(db_url)
    assert_error(client.post("/api/v1/events", json={"name": "user.signup", "id": "refused"}), 429, "overloaded")
    assert counts(db_url) == before
    assert conveyor_app.app.runs_for_event("refused") == []

    conveyor_app.app.drain(timeout=30)
    wait_until(lambda: client.post("/api/v1/events", json={"name": "echo.me", "id": "after"}).status_code == 202,
               timeout=10, message="the intake accepting again once the backlog is drained")
