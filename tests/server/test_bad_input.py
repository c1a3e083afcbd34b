"""Bad input: the exact 4xx, the error shape, nothing stored, and a server that still answers.

One server per backend serves the whole module (every case leaves the database as
it found it, and says so by counting events and runs before and after).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .helpers import assert_accepted, assert_error, counts, describe, raw_request

MIB = 1024 * 1024
VALID = {"name": "user.signup", "data": {"name": "ok"}}


@pytest.fixture
def srv(shared_server):
    """The module's server, checked healthy after each test, with nothing stored by it."""
    before = counts(shared_server.server.db_url)
    yield shared_server.server
    assert shared_server.server.proc.poll() is None, "the server died:\n" + shared_server.server.stderr()
    assert shared_server.server.healthy(), "the server no longer answers /healthz:\n" + shared_server.server.stderr()
    assert counts(shared_server.server.db_url) == before, "bad input stored something"


@pytest.fixture
def srv_storing(shared_server):
    """The module's server, for a test that stores on purpose."""
    return shared_server.server


def post_raw(srv: Any, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return srv.client().post("/api/v1/events", content=content, headers={"Content-Type": content_type})


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


BAD_BODIES = [
    # (id, body bytes, status, code)
    ("malformed-json", b'{"name": "user.signup", "data": ', 400, "invalid_json"),
    ("trailing-garbage", b'{"name": "user.signup"} x', 400, "invalid_json"),
    ("empty-body", b"", 400, "invalid_json"),
    ("invalid-utf8", b'{"name": "user.signup", "data": {"k": "\xff\xfe\xfa"}}', 400, "invalid_json"),
    ("nan-is-not-json", b'{"name": "user.signup", "data": {"k": NaN}}', (400, 422), ("invalid_json", "invalid_input")),
    ("nested-too-deeply", b'{"name": "user.signup", "data": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
     400, "invalid_json"),
    # deeper than any API answer could serve back (the encoders and response models recurse)
    ("data-nested-101-levels", b'{"name": "user.signup", "data": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}", 422,
     "invalid_input"),
    ("infinite-number", b'{"name": "user.signup", "data": {"k": 1e999}}', (400, 422),
     ("invalid_json", "invalid_input")),
    ("lone-surrogate", b'{"name": "user.signup", "data": {"k": "\\ud800"}}', (400, 422),
     ("invalid_json", "invalid_input")),
    ("nul-in-name", b'{"name": "user\\u0000signup"}', 422, "invalid_input"),
    ("nul-in-id", b'{"name": "user.signup", "id": "a\\u0000b"}', 422, "invalid_input"),
    ("name-is-a-number", js({"name": 123}), 422, "invalid_input"),
    ("name-is-null", js({"name": None}), 422, "invalid_input"),
    ("data-is-a-list", js({"name": "user.signup", "data": []}), 422, "invalid_input"),
    ("data-is-a-string", js({"name": "user.signup", "data": "x"}), 422, "invalid_input"),
    ("data-is-a-number", js({"name": "user.signup", "data": 1}), 422, "invalid_input"),
    ("missing-name", js({"data": {}}), 422, "invalid_input"),
    ("empty-name", js({"name": ""}), 422, "invalid_input"),
    ("name-over-256", js({"name": "n" * 257}), 422, "invalid_input"),
    ("unknown-field", js({"name": "user.signup", "extra": 1}), 422, "invalid_input"),
    ("ts-is-not-accepted", js({"name": "user.signup", "ts": 5}), 422, "invalid_input"),
    ("empty-list", js([]), 422, "invalid_input"),
    ("list-of-1001", js([{"name": "user.signup", "id": f"e{i}"} for i in range(1001)]), 422, "invalid_input"),
    ("one-invalid-in-a-batch", js([VALID, {"name": "user.signup", "id": "x"}, {"name": 5}, VALID]), 422,
     "invalid_input"),
    ("a-non-object-in-a-batch", js([VALID, 1]), 422, "invalid_input"),
    ("nested-list", js([[VALID]]), 422, "invalid_input"),
    ("reserved-name", js({"name": "conveyor/x"}), 422, "invalid_input"),
    ("reserved-name-in-a-batch", js([VALID, {"name": "conveyor/invoke"}]), 422, "invalid_input"),
    ("id-is-a-number", js({"name": "user.signup", "id": 7}), 422, "invalid_input"),
    ("id-is-empty", js({"name": "user.signup", "id": ""}), 422, "invalid_input"),
    ("id-over-256", js({"name": "user.signup", "id": "i" * 257}), 422, "invalid_input"),
    ("body-is-a-string", js("user.signup"), 422, "invalid_input"),
    ("body-is-a-number", js(42), 422, "invalid_input"),
    ("body-is-null", js(None), 422, "invalid_input"),
    ("event-data-over-1-mib", js({"name": "user.signup", "data": {"blob": "x" * (MIB + 16)}}), 413, "too_large"),
    ("one-big-event-in-a-batch", js([VALID, {"name": "user.signup", "data": {"blob": "x" * (MIB + 16)}}]), 413,
     "too_large"),
]


@pytest.mark.parametrize("body, status, code", [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_event_bodies(srv, body, status, code) -> None:
    assert_error(post_raw(srv, body), status, code)


def test_limits_are_inclusive(srv_storing) -> None:
    """The bounds themselves are accepted: 1000 events, a 256-char name and id."""
    name, event_id = "n" * 256, "i" * 256
    batch = [{"name": "bounds.check", "id": f"bound-{i}"} for i in range(999)] + [{"name": name, "id": event_id}]
    ids = assert_accepted(srv_storing.client().post("/api/v1/events", json=batch), 1000)
    assert ids[-1] == event_id


def test_odd_but_valid_data_round_trips(srv_storing) -> None:
    """Valid JSON at the edges is stored as sent: NUL and astral characters, big integers,
    a 100-deep nesting, a byte-order mark, whitespace around the body."""
    data = {"nul": "a\u0000b", "emoji": "\U0001F600", "big": 2**70, "neg": -(2**63), "float": 1.5e300,
            "deep": [[[[[[[[[[0]]]]]]]]]] * 10, "nested": {"a": {"b": {"c": None}}}, "empty": {}}
    client = srv_storing.client()
    body = b"\xef\xbb\xbf  " + js({"name": "odd.data", "data": data}) + b"\n"
    [event_id] = assert_accepted(client.post("/api/v1/events", content=body,
                                             headers={"Content-Type": "application/json"}))
    resp = client.get(f"/api/v1/events/{event_id}")
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["data"] == data


def _big_body(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    prefix = b'{"name": "user.signup", "data": {"blob": "'
    yield prefix
    left = total - len(prefix)
    while left > 0:
        n = min(chunk, left)
        yield b"x" * n
        left -= n


def _rss_guard(server: Any) -> Any:
    class Guard:
        def __enter__(self) -> Guard:
            self.before = server.rss_kib()
            return self

        def __exit__(self, *exc: object) -> None:
            after = server.rss_kib()
            assert after < self.before + 30 * 1024, f"server RSS grew from {self.before} KiB to {after} KiB"

    return Guard()


def test_a_50_mib_body_is_refused_from_its_content_length(srv) -> None:
    total = 50 * MIB
    head = (
        "POST /api/v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {total}\r\n\r\n"
    ).encode()
    with _rss_guard(srv):
        resp = raw_request(srv.address, head, _big_body(total), timeout=30)
    assert resp.status == 413, resp
    assert resp.sent < total, "the server read the whole 50 MiB before refusing it"
    error = json.loads(resp.body)["error"]
    assert error["code"] == "too_large", resp


def test_a_chunked_body_over_16_mib_is_cut_off(srv) -> None:
    """No Content-Length: the body is chunked and grows past the 16 MiB limit while streaming."""
    head = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    def chunked() -> Iterator[bytes]:
        for piece in _big_body(24 * MIB):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    with _rss_guard(srv):
        resp = raw_request(srv.address, head, chunked(), timeout=60)
    assert resp.status == 413, resp
    assert resp.sent < 24 * MIB, "the server read the whole body before refusing it"
    assert json.loads(resp.body)["error"]["code"] == "too_large", resp


def test_a_body_longer_than_its_content_length_stores_nothing_extra(srv) -> None:
    """Content-Length says 2 bytes, 20 KiB follow: the 2 bytes are malformed JSON (400) and the
    rest is not taken for an event."""
    head = b"POST /api/v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    resp = raw_request(srv.address, head, [js({"name": "user.signup", "data": {"x": "y" * 20_000}})], timeout=30)
    assert resp.status == 400, resp


@pytest.mark.parametrize("shape", ["one-header", "many-headers", "an-8-mib-header"])
def test_64_kib_of_headers_is_a_4xx_or_a_closed_connection(srv, shape) -> None:
    if shape == "one-header":
        headers = "X-Big: " + "a" * (64 * 1024) + "\r\n"
    elif shape == "many-headers":
        headers = "".join(f"X-H{i}: {'b' * 60}\r\n" for i in range(1024))
    else:
        headers = "X-Huge: " + "c" * (8 * MIB) + "\r\n"
    head = f"GET /healthz HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()
    with _rss_guard(srv):
        resp = raw_request(srv.address, head, timeout=30)
    assert resp.status is None or resp.status in (400, 431), resp


def test_a_bad_content_length_is_a_400(srv) -> None:
    head = (b"POST /api/v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: abc\r\n\r\n")
    resp = raw_request(srv.address, head, [b"{}"], timeout=30)
    assert resp.status is None or resp.status == 400, resp


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/html; charset=utf-8",
                                          None])
def test_a_json_body_with_another_content_type_is_read_as_json(srv_storing, content_type) -> None:
    """The intake reads the body as JSON whatever the declared type (what this server does:
    lenient, like most event collectors; never a 5xx)."""
    headers = {"Content-Type": content_type} if content_type else {}
    body = js({"name": "ctype.check", "id": f"ctype-{content_type}"})
    resp = srv_storing.client().post("/api/v1/events", content=body, headers=headers)
    assert resp.status_code == 202, describe(resp)
    assert resp.json() == {"ids": [f"ctype-{content_type}"]}


def test_a_form_body_is_malformed_json(srv) -> None:
    assert_error(post_raw(srv, b"name=user.signup", "application/x-www-form-urlencoded"), 400, "invalid_json")


@pytest.mark.parametrize("path, params, status", [
    ("/api/v1/runs", {"limit": "abc"}, 400),
    ("/api/v1/runs", {"limit": "1.5"}, 400),
    ("/api/v1/runs", {"limit": "0"}, (400, 422)),
    ("/api/v1/runs", {"limit": "-1"}, (400, 422)),
    ("/api/v1/runs", {"limit": "501"}, (400, 422)),
    ("/api/v1/runs", {"limit": "99999999999999999999999"}, (400, 422)),
    ("/api/v1/runs", {"status": "bogus"}, (400, 422)),
    ("/api/v1/events", {"limit": "abc"}, 400),
    ("/api/v1/events", {"cursor": "not-a-cursor"}, (400, 422)),
    ("/api/v1/dead-letters", {"limit": "abc"}, 400),
])
def test_bad_query_parameters(srv, path, params, status) -> None:
    resp = srv.client().get(path, params=params)
    error = assert_error(resp, status)
    assert error["code"] == {400: "invalid_query", 422: "invalid_input"}[resp.status_code], describe(resp)


@pytest.mark.parametrize("path, key", [("/api/v1/runs", "runs"), ("/api/v1/dead-letters", "dead_letters")])
@pytest.mark.parametrize("cursor", ["not-a-cursor", "%%%", "\u00e9\u2713", "0" * 300])
def test_a_run_cursor_is_an_opaque_position(srv, path, key, cursor) -> None:
    """A run listing's cursor is a position among run ids: one that names no run is still a
    position (an empty or partial page), or a 4xx; never a 5xx."""
    resp = srv.client().get(path, params={"cursor": cursor})
    if resp.status_code == 200:
        assert set(resp.json()) == {key, "next"}, describe(resp)
    else:
        assert_error(resp, (400, 422))


@pytest.mark.parametrize("body", [
    js({"run_ids": "not-a-list"}),
    js({"run_ids": [1, 2]}),
    js({"function": 5}),
    js({"rate": "fast"}),
    js({"rate": -1}),
    js({"unknown": True}),
    js([]),
])
def test_bad_redrive_bodies(srv, body) -> None:
    """A body of the wrong shape is a 422, as at intake; malformed JSON is a 400."""
    resp = srv.client().post("/api/v1/dead-letters/redrive", content=body, headers={"Content-Type": "application/json"})
    assert_error(resp, 422, "invalid_input")
    resp = srv.client().post("/api/v1/dead-letters/redrive", content=b"{", headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "invalid_json")


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/v1/runs/unknown-run", 404),
    ("GET", "/api/v1/runs/unknown-run/logs", 404),
    ("POST", "/api/v1/runs/unknown-run/cancel", 404),
    ("POST", "/api/v1/runs/unknown-run/replay", 404),
    ("GET", "/api/v1/events/unknown-event", 404),
    ("GET", "/api/v1/nothing-here", 404),
    ("PATCH", "/api/v1/events", 405),
    ("DELETE", "/api/v1/events", 405),
    ("PUT", "/api/v1/runs/unknown-run", 405),
    ("GET", "/api/v1/dead-letters/redrive", 405),
])
def test_unknown_ids_and_wrong_methods(srv, method, path, status) -> None:
    assert_error(srv.client().request(method, path), status, {404: "not_found", 405: "method_not_allowed"}[status])


def test_a_valid_event_after_all_that_is_accepted(srv_storing, shared_server) -> None:
    client = srv_storing.client()
    [event_id] = assert_accepted(client.post("/api/v1/events", json={**VALID, "id": "after-bad-input"}))
    assert [r.function_id for r in shared_server.app.runs_for_event(event_id)] == ["greet"]
