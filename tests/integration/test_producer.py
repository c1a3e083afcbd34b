"""The HTTP producer against a real ``conveyor server`` process, over real HTTP.

The database side is checked through a database-backed app in the test process, on
the same database, with the same functions (its ``migrate()`` registers them, so the
server routes events to them and ``drain()`` runs them here).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import FAST_BACKOFF_KWARGS, sqlite_url
from tests.server.helpers import Server, counts, start_server

import conveyor
from conveyor import ConfigError, Event, InvalidInput, InvalidState, NotFound, ServerUnavailable
from conveyor.sdk import wire

EVENT_KEY = "producer-event-key"
API_TOKEN = "producer-api-token"
AUTH = ("--event-key", EVENT_KEY, "--api-token", API_TOKEN)

pytestmark = pytest.mark.backends("sqlite")  # the producer is the same on any database; one test runs on both


def define(app: conveyor.Conveyor) -> None:
    @app.function(on="order.placed", retries=0)
    def handle_order(ctx: conveyor.Context) -> dict[str, Any]:
        ctx.log.info("order %s", ctx.event.data.get("order"))
        total = ctx.step.run("total", lambda: sum(ctx.event.data.get("items", [])))
        return {"total": total}

    @app.function(on="order.broken", retries=0)
    def broken(ctx: conveyor.Context) -> None:
        ctx.step.run("explode", _explode)

    @app.function(on="order.later", retries=0)
    def later(ctx: conveyor.Context) -> None:
        ctx.step.sleep("nap", 3600)


def _explode() -> None:
    raise RuntimeError("exploded on purpose")


@pytest.fixture
def db_app(db_url: str, tmp_path: Path) -> Iterator[conveyor.Conveyor]:
    """The database-backed app: its functions are registered in the server's database."""
    app = conveyor.Conveyor("db", database=db_url, backoff=conveyor.Backoff(**FAST_BACKOFF_KWARGS),
                            blob_dir=tmp_path / "blobs")
    define(app)
    app.migrate()
    yield app
    app.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()  # its exit status is the server tests' business (tests/server)


@pytest.fixture
def server(db_app: conveyor.Conveyor, db_url: str, tmp_path: Path, servers: list[Server]) -> Server:
    servers.append(start_server(db_url, tmp_path / "server", *AUTH))
    return servers[-1]


@pytest.fixture
def make_producer() -> Iterator[Callable[..., conveyor.Conveyor]]:
    made: list[conveyor.Conveyor] = []

    def make(url: str, **kwargs: Any) -> conveyor.Conveyor:
        kwargs.setdefault("event_key", EVENT_KEY)
        app = conveyor.Conveyor("producer", server_url=url, **kwargs)
        define(app)  # the same module as the service's: registering touches no database
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


class Attempts(logging.Handler):
    """Counts the producer's retries (its debug records) and signals the first one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.retries: list[str] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.retries.append(record.getMessage())
            self.first.set()


@pytest.fixture
def attempts() -> Iterator[Attempts]:
    logger = logging.getLogger(wire.__name__)
    handler, level = Attempts(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- sending ----------------------------------------------------------------------------------------


def test_send_stores_the_event_and_starts_its_run(server: Server, db_app: Any, make_producer: Any,
                                                   attempts: Attempts) -> None:
    producer = make_producer(server.url)
    event_id = producer.send("order.placed", {"order": "A-1", "items": [1, 2]})

    stored = db_app._engine().storage.event_get(event_id)
    assert stored is not None and stored.name == "order.placed"
    assert conveyor_json(stored.data) == {"order": "A-1", "items": [1, 2]}
    runs = db_app.runs_for_event(event_id)
    assert [(r.function_id, r.status) for r in runs] == [("handle-order", "queued")]
    assert attempts.retries == []
    assert db_app.drain() == 1
    assert db_app.get_run(runs[0].id).output == {"total": 3}


def test_send_many_keeps_order_and_given_ids(server: Server, db_app: Any, make_producer: Any) -> None:
    producer = make_producer(server.url)
    ids = producer.send_many([
        Event("order.placed", {"items": [1]}),
        Event("order.placed", {"items": [2]}, id="order-2"),
        Event("unrouted.event"),
    ])
    assert len(ids) == 3 and ids[1] == "order-2" and len(set(ids)) == 3
    assert counts(server.db_url) == (3, 2)
    assert [len(db_app.runs_for_event(i)) for i in ids] == [1, 1, 0]
    assert producer.send_many([]) == []


def test_send_many_over_one_request_is_split(server: Server, make_producer: Any) -> None:
    producer = make_producer(server.url)
    ids = producer.send_many(Event("order.placed", {"items": [i]}) for i in range(2500))
    assert len(ids) == len(set(ids)) == 2500
    assert counts(server.db_url) == (2500, 2500)


def test_resending_an_id_creates_nothing_new(server: Server, db_app: Any, make_producer: Any) -> None:
    producer = make_producer(server.url)
    first = producer.send("order.placed", {"items": [1]}, id="order-1")
    again = producer.send("order.placed", {"items": [1]}, id="order-1")
    assert first == again == "order-1"
    assert producer.send_many([Event("order.placed", {"items": [1]}, id="order-1")]) == ["order-1"]
    assert counts(server.db_url) == (1, 1)
    assert len(db_app.runs_for_event("order-1")) == 1


def test_a_server_that_comes_up_within_send_timeout_gets_the_event_once(
    db_app: Any, db_url: str, tmp_path: Path, servers: list[Server], make_producer: Any, attempts: Attempts,
) -> None:
    port = free_port()
    producer = make_producer(f"http://127.0.0.1:{port}", send_timeout=60)
    problems: list[BaseException] = []

    def start_after_first_failure() -> None:
        try:
            assert attempts.first.wait(30), "the producer never retried"
            servers.append(start_server(db_url, tmp_path / "late", "--port", str(port), *AUTH))
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    helper = threading.Thread(target=start_after_first_failure)
    helper.start()
    try:
        event_id = producer.send("order.placed", {"items": [5]})
    finally:
        helper.join(60)
    assert not problems, problems
    assert attempts.retries, "the send should have failed at least once before the server was up"
    assert "ConnectError" in attempts.retries[0]
    assert counts(db_url) == (1, 1)
    assert [r.event_id for r in db_app.runs_for_event(event_id)] == [event_id]


def test_a_server_that_stays_down_raises_server_unavailable(make_producer: Any, attempts: Attempts) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    producer = make_producer(url, send_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable) as caught:
        producer.send("order.placed", {"items": [1]})
    assert time.monotonic() - start < 5
    assert isinstance(caught.value, conveyor.DatabaseUnavailable)
    assert url in str(caught.value) and "ConnectError" in str(caught.value)
    assert len(attempts.retries) >= 2


def test_a_wrong_event_key_is_a_config_error_and_not_retried(server: Server, make_producer: Any,
                                                            attempts: Attempts) -> None:
    producer = make_producer(server.url, event_key="not-the-key", send_timeout=30)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="rejected the event key"):
        producer.send("order.placed", {"items": [1]})
    assert time.monotonic() - start < 5
    assert attempts.retries == []
    assert "not-the-key" not in str(producer)
    assert counts(server.db_url) == (0, 0)


def test_no_event_key_says_which_setting_is_missing(server: Server, make_producer: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_EVENT_KEY", raising=False)
    producer = make_producer(server.url, event_key=None)
    with pytest.raises(ConfigError, match="CONVEYOR_EVENT_KEY"):
        producer.send("order.placed")


def test_the_servers_422_is_invalid_input(server: Server, make_producer: Any, attempts: Attempts,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Local validation is the engine's own, so a bad event never leaves the process; to see
    # the server's answer, let one through unchecked.
    def unchecked(name: Any, data: Any, event_id: Any) -> Any:
        from conveyor.records import NewEvent

        return NewEvent(event_id or "x-1", name, "[1,2]", 0.0)

    monkeypatch.setattr(wire, "make_event", unchecked)
    producer = make_producer(server.url)
    with pytest.raises(InvalidInput, match="422") as caught:
        producer.send("order.placed", [1, 2])
    assert "data" in str(caught.value)
    assert attempts.retries == []
    assert counts(server.db_url) == (0, 0)


def test_invalid_events_fail_before_any_request(make_producer: Any, attempts: Attempts) -> None:
    producer = make_producer(f"http://127.0.0.1:{free_port()}", send_timeout=30)  # nothing listens there
    for bad in [("", {}), ("order.placed", [1]), ("conveyor/internal", {}), ("order.placed", {"x": object()})]:
        with pytest.raises(InvalidInput):
            producer.send(*bad)
    with pytest.raises(InvalidInput):
        producer.send_many([Event("ok.event"), Event("", {})])
    with pytest.raises(InvalidInput, match="1 MiB"):
        producer.send("order.placed", {"blob": "x" * (1024 * 1024)})
    assert attempts.retries == []


def test_asend_and_asend_many(server: Server, db_app: Any, make_producer: Any) -> None:
    producer = make_producer(server.url)

    async def main() -> tuple[str, list[str]]:
        one = await producer.asend("order.placed", {"items": [1]})
        many = await asyncio.gather(*(producer.asend("order.placed", {"items": [i]}) for i in range(20)))
        batch = await producer.asend_many([Event("order.placed", {"items": [2]}, id="async-batch")])
        return one, [*many, *batch]

    one, more = asyncio.run(main())
    again = asyncio.run(main())  # a second event loop gets its own pooled client
    assert len({one, *more, again[0], *again[1]}) == 2 * 22 - 1  # "async-batch" twice: stored once
    assert counts(server.db_url) == (43, 43)
    assert len(db_app.runs_for_event("async-batch")) == 1


# ---- the management API ---------------------------------------------------------------------------


@pytest.mark.backends("sqlite", "postgres")
def test_get_run_equals_the_database_apps(server: Server, db_app: Any, make_producer: Any) -> None:
    producer = make_producer(server.url, api_token=API_TOKEN)
    event_id = producer.send("order.placed", {"order": "B-7", "items": [3, 4]})
    db_app.drain()
    run_id = db_app.runs_for_event(event_id)[0].id

    over_http = producer.get_run(run_id)
    assert over_http == db_app.get_run(run_id)
    assert over_http.status == "completed" and over_http.output == {"total": 7}
    assert [s.id for s in over_http.steps] == ["total"]
    assert over_http.steps[0].ended_at is not None and over_http.steps[0].ended_at.tzinfo is not None

    summaries = producer.runs_for_event(event_id)
    assert [r.id for r in summaries] == [run_id]
    assert summaries[0].created_at == over_http.created_at and summaries[0].status == "completed"
    assert [r.id for r in producer.list_runs(function="handle-order", status="completed")] == [run_id]
    logs = producer.run_logs(run_id)
    assert [entry["message"] for entry in logs] == [e["message"] for e in db_app.run_logs(run_id)]

    sleeping = producer.send("order.later")
    db_app.drain()
    sleeping_id = db_app.runs_for_event(sleeping)[0].id
    assert producer.get_run(sleeping_id) == db_app.get_run(sleeping_id)  # when it wakes, too
    assert producer.get_run(sleeping_id).steps[0].wake_at is not None


def test_management_calls(server: Server, db_app: Any, make_producer: Any) -> None:
    producer = make_producer(server.url, api_token=API_TOKEN)
    ok = producer.send("order.placed", {"items": [1]})
    bad = producer.send("order.broken")
    db_app.drain()
    ok_run = db_app.runs_for_event(ok)[0].id
    bad_run = db_app.runs_for_event(bad)[0].id

    with pytest.raises(NotFound):
        producer.get_run("no-such-run")
    with pytest.raises(InvalidState):
        producer.cancel_run(ok_run)
    assert [r.id for r in producer.dead_letters()] == [bad_run]
    assert [r.id for r in producer.list_runs(limit=2)] == [r.id for r in db_app.list_runs(limit=2)]
    from datetime import UTC, datetime, timedelta

    hour_ago, future = datetime.now(UTC) - timedelta(hours=1), datetime(2999, 1, 1)
    assert {r.id for r in producer.list_runs(since=hour_ago)} == {r.id for r in db_app.list_runs(since=hour_ago)}
    assert {r.id for r in producer.list_runs(since=hour_ago)} == {ok_run, bad_run}
    assert producer.list_runs(since=future) == db_app.list_runs(since=future) == []
    assert [r.id for r in producer.list_runs(event_id=ok)] == [r.id for r in db_app.list_runs(event_id=ok)] == [ok_run]
    assert producer.list_runs(event_id=ok, status="failed") == db_app.list_runs(event_id=ok, status="failed") == []
    with pytest.raises(InvalidInput):
        db_app.list_runs(since="yesterday")
    assert producer.redrive([bad_run]) == [bad_run]
    assert db_app.get_run(bad_run).status == "queued"
    db_app.drain()
    assert producer.redrive() == [bad_run]
    assert producer.get_run(bad_run).status == "queued"

    producer.send("order.placed", {"items": [9]}, id="to-cancel")
    cancel_id = db_app.runs_for_event("to-cancel")[0].id
    producer.cancel_run(cancel_id)
    assert db_app.get_run(cancel_id).status == "cancelled"

    async def amain() -> conveyor.Run:
        return await producer.aget_run(ok_run)

    assert asyncio.run(amain()) == db_app.get_run(ok_run)


def test_management_without_a_token_names_the_setting(server: Server, make_producer: Any) -> None:
    producer = make_producer(server.url)  # an event key only
    producer.send("order.placed")
    with pytest.raises(ConfigError, match="CONVEYOR_API_TOKEN"):
        producer.list_runs()


# ---- configuration ----------------------------------------------------------------------------------


def test_a_producer_never_touches_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             make_producer: Any) -> None:
    monkeypatch.chdir(tmp_path)
    app = make_producer("http://127.0.0.1:9/")
    assert app.server_url == "http://127.0.0.1:9"
    fn = app.functions["handle-order"]
    for what, call in [
        ("worker()", lambda: app.worker()),
        ("drain()", lambda: app.drain()),
        ("migrate()", lambda: app.migrate()),
        ("prune()", lambda: app.prune()),
        ("schedules()", lambda: app.schedules()),
        ("purge_dead_letters()", lambda: app.purge_dead_letters()),
        ("invoke()", lambda: fn.invoke({})),
    ]:
        with pytest.raises(ConfigError, match=r"sends over HTTP \(server_url=http://127.0.0.1:9\); " + what.replace(
                "(", r"\(").replace(")", r"\)") + " needs a database"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_which_apps_send_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("CONVEYOR_DATABASE_URL", "CONVEYOR_SERVER_URL", "CONVEYOR_EVENT_KEY", "CONVEYOR_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="not both"):
        conveyor.Conveyor("x", database="sqlite:///x.db", server_url="http://127.0.0.1:8288")
    with pytest.raises(ConfigError, match="server_url"):
        conveyor.Conveyor("x", database="sqlite:///x.db", event_key="k")
    for bad in ("127.0.0.1:8288", "ftp://host", "http://", "http://h/?q=1"):
        with pytest.raises(ConfigError, match="server_url"):
            conveyor.Conveyor("x", server_url=bad)
    with pytest.raises(ConfigError, match="send_timeout"):
        conveyor.Conveyor("x", server_url="http://h", send_timeout=0)

    monkeypatch.setenv("CONVEYOR_SERVER_URL", "http://127.0.0.1:8288")
    monkeypatch.setenv("CONVEYOR_EVENT_KEY", "env-key")
    app = conveyor.Conveyor("x")
    assert app.server_url == "http://127.0.0.1:8288" and app._producer is not None
    assert app._producer.event_key == "env-key"
    # A database named anywhere wins over the environment's server: the same module is a
    # producer in the web tier and a database app in `conveyor worker --database URL`.
    assert conveyor.Conveyor("x", database=sqlite_url(tmp_path / "a.db")).server_url is None
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", sqlite_url(tmp_path / "b.db"))
    assert conveyor.Conveyor("x").server_url is None
    assert conveyor.Conveyor("x", server_url="http://h:1").server_url == "http://h:1"


def test_import_conveyor_does_not_import_httpx() -> None:
    code = (
        "import sys, conveyor\n"
        "app = conveyor.Conveyor('t', server_url='http://127.0.0.1:9', event_key='k')\n"
        "print('httpx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def conveyor_json(text: str) -> Any:
    import json

    return json.loads(text)
