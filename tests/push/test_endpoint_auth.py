"""``app.serve()`` (and ``serve_wsgi()``) on a real server: signed requests run, anything else is
refused with 401 before any user code runs."""

from __future__ import annotations

import threading
import time
import wsgiref.simple_server
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Tally, sqlite_url

import conveyor
from conveyor.errors import ConfigError
from conveyor.executor.inputs import InvocationInput
from conveyor.push.protocol import PushRequest, decode_response, encode_request
from conveyor.push.signing import HEADER, Verifier, sign
from conveyor.records import Completed
from conveyor.types import Event

from .apps import define
from .harness import KEY, OLD_KEY, served


@pytest.fixture
def code(tmp_path: Path, tally: Tally) -> Iterator[Any]:
    app = conveyor.Conveyor("push-auth", database=sqlite_url(tmp_path / "never-opened.db"))
    define(app, tally)
    yield app
    app.close()
    assert not (tmp_path / "never-opened.db").exists()  # an endpoint needs no database


@pytest.fixture
def endpoint(code: Any) -> Iterator[str]:
    with served(code.serve(signing_key=KEY, fallback_signing_key=OLD_KEY)) as server:
        yield server.url + "/"


def request_body(key: str = "k", run_id: str = "run-1") -> bytes:
    inp = InvocationInput(run_id, "three", Event("push.three", {"key": key}, "ev-1"))
    return encode_request(PushRequest([inp], time.time(), None))


def post(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"} | ({HEADER: signature} if signature else {})
    return httpx.post(url, content=body, headers=headers, timeout=30)


def assert_refused(reply: httpx.Response, status: int = 401) -> None:
    assert reply.status_code == status, reply.text
    assert set(reply.json()) == {"error"} and reply.json()["error"]["message"]


def test_a_signed_request_runs_and_the_answer_is_signed_with_its_id(endpoint: str, tally: Tally) -> None:
    body = request_body()
    reply = post(endpoint, body, sign(body, [KEY], request_id="req-ok"))
    assert reply.status_code == 200, reply.text
    Verifier([KEY], replay_guard=False).verify(reply.headers[HEADER], reply.content, request_id="req-ok")
    [result] = decode_response(reply.content)
    assert result.run_id == "run-1" and [w.id for w in result.writes] == ["a"]
    assert result.outcome is not None and result.outcome.reason == "yield"  # type: ignore[union-attr]
    assert tally.snapshot() == {"k:a": 1}


@pytest.mark.parametrize("how", ["unsigned", "other key", "altered body", "stale", "future", "garbage header"])
def test_a_request_that_is_not_properly_signed_runs_nothing(endpoint: str, tally: Tally, how: str) -> None:
    body = request_body()
    signature: str | None = {
        "unsigned": None,
        "other key": sign(body, ["z" * 32], request_id="r"),
        "altered body": sign(body + b" ", [KEY], request_id="r"),
        # an hour out of the 300 s window (its edges are tested with an injected clock in test_signing;
        # here a second between signing and checking must not bring a signature back into it)
        "stale": sign(body, [KEY], request_id="r", timestamp=time.time() - 3600),
        "future": sign(body, [KEY], request_id="r", timestamp=time.time() + 3600),
        "garbage header": "t=now,id=?,v1=nope",
    }[how]
    assert_refused(post(endpoint, body, signature))
    assert tally.snapshot() == {}


def test_a_replayed_request_runs_nothing_more(endpoint: str, tally: Tally) -> None:
    body = request_body()
    signature = sign(body, [KEY], request_id="req-once")
    assert post(endpoint, body, signature).status_code == 200
    assert_refused(post(endpoint, body, signature))
    assert tally.snapshot() == {"k:a": 1}


def test_during_a_rotation_the_fallback_key_is_accepted(endpoint: str, tally: Tally) -> None:
    body = request_body()
    reply = post(endpoint, body, sign(body, [OLD_KEY], request_id="req-old"))
    assert reply.status_code == 200, reply.text
    Verifier([OLD_KEY], replay_guard=False).verify(reply.headers[HEADER], reply.content, request_id="req-old")
    assert tally.snapshot() == {"k:a": 1}


def test_other_methods_and_malformed_bodies_are_refused(endpoint: str, tally: Tally) -> None:
    assert_refused(httpx.get(endpoint, timeout=30), 405)
    junk = b'{"v": 1, "now": "x"}'
    assert_refused(post(endpoint, junk, sign(junk, [KEY], request_id="r-junk")), 400)
    assert tally.snapshot() == {}


def test_an_unknown_function_is_reported_not_run(endpoint: str) -> None:
    inp = InvocationInput("run-x", "not-here", Event("x", {}, "ev-x"))
    body = encode_request(PushRequest([inp], time.time(), None))
    reply = post(endpoint, body, sign(body, [KEY], request_id="r-unknown"))
    [result] = decode_response(reply.content)
    assert result.error is not None and result.error["type"] == "NotFound"


def test_serving_needs_a_signing_key(code: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_SIGNING_KEY", raising=False)
    monkeypatch.delenv("CONVEYOR_SIGNING_KEY_FALLBACK", raising=False)
    with pytest.raises(ConfigError, match="signing key"):
        code.serve()
    with pytest.raises(ConfigError, match="at least 16"):
        code.serve(signing_key="short")
    monkeypatch.setenv("CONVEYOR_SIGNING_KEY", KEY)
    assert code.serve() is not None


def test_the_wsgi_endpoint_behaves_the_same(code: Any, tally: Tally) -> None:
    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    app = code.serve_wsgi(signing_key=KEY)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        body = request_body("w", "run-w")
        assert_refused(post(url, body, None))
        assert tally.snapshot() == {}
        reply = post(url, body, sign(body, [KEY], request_id="req-w"))
        assert reply.status_code == 200
        [result] = decode_response(reply.content)
        assert [w.output for w in result.writes] == ["1"] and tally.snapshot() == {"w:a": 1}
        assert_refused(post(url, body, sign(body, [KEY], request_id="req-w")))  # replayed
        one = InvocationInput("run-1", "score", Event("x", {"x": 4}, "ev-s"))
        body = encode_request(PushRequest([one], time.time(), None))
        [result] = decode_response(post(url, body, sign(body, [KEY], request_id="req-s")).content)
        assert result.outcome == Completed('{"x2":8}')
    finally:
        server.shutdown()
        server.server_close()
        app.close()
