"""Clients that are slow, greedy or gone: a stalled head or body gets a 408 and its connection
closed; bodies being read at once are bounded (429 past the budget); one event is cut off at
its own limit, before the rest of its body is read; a client that hangs up mid-body is no
server error. Each against a real server started with tight limits."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from tests.conftest import wait_until

from .helpers import assert_error, counts, raw_request

READ_TIMEOUT = "1"
LIMITS = ("--read-timeout", READ_TIMEOUT, "--max-body-bytes", "100000", "--max-inflight-bytes", "250000",
          "--max-event-bytes", "1000")


@pytest.fixture
def tight(conveyor_app, db_url, start_server):
    return start_server(db_url, *LIMITS)


def test_a_head_that_stalls_is_a_408_and_a_closed_connection(tight) -> None:
    resp = raw_request(tight.address, b"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Ty", timeout=20)
    assert resp.status == 408, resp
    assert json.loads(resp.body)["error"]["code"] == "timeout"
    assert tight.healthy()


def test_a_connection_that_never_speaks_is_closed(tight) -> None:
    with socket.create_connection(tight.address, timeout=20) as sock:
        data = sock.recv(4096)  # the server's 408, then the end of the stream
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data


def test_a_body_that_stalls_is_a_408(tight) -> None:
    head = b"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    before = counts(tight.db_url)
    resp = raw_request(tight.address, head, [b'[{"na'], timeout=20)
    assert resp.status == 408, resp
    assert json.loads(resp.body)["error"]["code"] == "timeout"
    assert counts(tight.db_url) == before


def test_one_event_is_cut_off_at_its_own_limit(tight) -> None:
    """A body that starts with '{' is one event: over its data's limit plus an envelope it is
    refused as soon as it passes that, not after the whole (otherwise allowed) body arrived."""
    total = 99_000  # under --max-body-bytes
    head = (f"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {total}\r\n\r\n").encode()
    body = [b'{"name": "user.signup", "data": {"blob": "'] + [b"x" * 1000] * 98
    resp = raw_request(tight.address, head, body, timeout=20)
    assert resp.status == 413, resp
    assert json.loads(resp.body)["error"]["code"] == "too_large"


def test_bodies_read_at_once_are_bounded(tight) -> None:
    """Two bodies of 100,000 declared bytes hold 200,000 of the 250,000 budget: a third of 60 kB
    is a 429 with Retry-After; once the two are gone, it is accepted."""
    head = (b"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n")
    batch = json.dumps([{"name": "user.signup", "id": f"budget-{i}", "data": {"pad": "p" * 40}}
                        for i in range(700)]).encode()
    assert 50_000 < len(batch) < 100_000

    def third() -> httpx.Response:
        return tight.client().post("/api/v1/events", content=batch, headers={"Content-Type": "application/json"})

    holders = [socket.create_connection(tight.address, timeout=20) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(head + b"[")
        refused: list[httpx.Response] = []
        # the holders' requests reach the server asynchronously: poll until the third is refused
        # (a try that got there first is a 202 that stores the batch; its ids make a retry a no-op)
        wait_until(lambda: refused.append(r := third()) or r.status_code == 429, timeout=20,
                   message="a body over the budget refused")
        error = assert_error(refused[-1], 429, "overloaded")
        assert refused[-1].headers["retry-after"] and "at once" in error["message"]
    finally:
        for sock in holders:
            sock.close()
    wait_until(lambda: third().status_code == 202, timeout=20, message="accepted once the budget is free")


def test_a_client_gone_mid_body_is_not_a_server_error(tight) -> None:
    head = b"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(tight.address, timeout=20) as sock:
            sock.sendall(head + b'{"na')
    assert tight.healthy()
    assert "Traceback" not in tight.stderr() and "unexpected" not in tight.stderr()


@pytest.mark.parametrize("body, why", [
    (b'{"name": "user.signup", "data": {"k": NaN}}', "NaN"),
    (b'{"name": "user.signup", "data": {"k": -Infinity}}', "Infinity"),
    (b'{"name": "user.signup", "data": {"k": 1e999}}', "out of range"),
    ('{"name": "user.signup"}'.encode("utf-16"), "UTF-8"),
])
def test_only_strict_utf8_json_is_accepted(tight, body, why) -> None:
    resp = tight.client().post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(resp, 400, "invalid_json")
    assert why in error["message"], error


def test_a_malformed_request_line_gets_the_json_error_shape(tight) -> None:
    resp = raw_request(tight.address, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", timeout=20)
    assert resp.status == 400, resp
    assert json.loads(resp.body)["error"]["code"] == "bad_request"


def test_head_healthz(tight) -> None:
    resp = httpx.head(tight.url + "/healthz")
    assert resp.status_code == 200 and resp.content == b""
