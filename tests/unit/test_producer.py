"""The producer's retry policy, on a fake transport and a fake clock.

``httpx.MockTransport`` stands in for the network only: what the server does with the
requests is tested against a real server in tests/integration/test_producer.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conveyor import ConfigError, ConveyorError, Event, InvalidInput, InvalidState, NotFound, ServerUnavailable
from conveyor.sdk.producer import Producer
from conveyor.sdk.wire import RetryPolicy, parse_retry_after

URL = "http://conveyor.test:8288"


class FakeTime:
    """A clock that only moves when the producer sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


Answer = httpx.Response | Exception


def producer(answers: list[Answer], seen: list[httpx.Request], time: FakeTime, **kwargs: Any) -> Producer:
    """A producer whose n-th request gets ``answers[n]`` (the last one repeats)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def ahandle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return handle(request)

    kwargs.setdefault("event_key", "ek")
    return Producer(URL, transport=httpx.MockTransport(handle), async_transport=httpx.MockTransport(ahandle),
                    sleep=time.sleep, asleep=time.asleep, clock=time.clock, rand=lambda: 0.0, **kwargs)


def accepted(ids: list[str] | None = None) -> httpx.Response:
    return httpx.Response(202, json={"ids": ids or ["x"]})


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


def refused() -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused")


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


def test_connection_errors_are_retried_with_the_same_id_and_growing_waits(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([refused(), refused(), httpx.ReadTimeout("slow"), error(502, "x", "bad gateway"), accepted()],
                 seen, time)
    event_id = p.send("a.b", {"n": 1})
    bodies = [json.loads(r.content) for r in seen]
    assert len(bodies) == 5 and all(b == {"id": event_id, "name": "a.b", "data": {"n": 1}} for b in bodies)
    assert time.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert all(r.headers["authorization"] == "Bearer ek" for r in seen)
    assert all(r.url == f"{URL}/api/v1/events" for r in seen)


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy()
    assert policy.delay(20, None, 0.0) == policy.cap
    assert policy.delay(3, None, 1.0) == pytest.approx(0.4 * (1 - policy.jitter))
    assert policy.delay(0, 2.0, 0.5) == pytest.approx(2.1)  # Retry-After, plus a little


def test_retry_after_is_honoured(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([error(429, "overloaded", "busy", **{"Retry-After": "2"}),
                  error(503, "database_unavailable", "db down", **{"Retry-After": "1"}), accepted()], seen, time)
    p.send("a.b")
    assert time.sleeps == [2.0, 1.0]


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", 1445412500.0) == 10.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_the_budget_bounds_the_retries(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([refused()], seen, time, send_timeout=5.0)
    with pytest.raises(ServerUnavailable) as caught:
        p.send("a.b")
    message = str(caught.value)
    assert URL in message and "ConnectError" in message and "Connection refused" in message
    assert f"{len(seen)} attempts" in message
    assert sum(time.sleeps) < 5.0 and len(seen) == len(time.sleeps) + 1 > 3


def test_a_retry_after_beyond_the_budget_gives_up_at_once(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([error(429, "overloaded", "busy", **{"Retry-After": "60"})], seen, time, send_timeout=5.0)
    with pytest.raises(ServerUnavailable, match="429 busy"):
        p.send("a.b")
    assert len(seen) == 1 and time.sleeps == []


@pytest.mark.parametrize(("answer", "raised", "text"), [
    (error(401, "unauthorized", "the key is missing or wrong"), ConfigError, "rejected the event key"),
    (error(422, "invalid_input", "data must be an object"), InvalidInput, "data must be an object"),
    (error(400, "invalid_json", "not JSON"), InvalidInput, "not JSON"),
    (error(413, "too_large", "too big"), InvalidInput, "too big"),
    (error(404, "not_found", "no route"), ConfigError, "no Conveyor API at"),
    (httpx.Response(500, text="Internal Server Error"), ConveyorError, "500: Internal Server Error"),
])
def test_answers_that_are_not_retried(time: FakeTime, answer: httpx.Response, raised: type[Exception],
                                      text: str) -> None:
    seen: list[httpx.Request] = []
    p = producer([answer, accepted()], seen, time)
    with pytest.raises(raised, match=text):
        p.send("a.b")
    assert len(seen) == 1 and time.sleeps == []


def test_calls_that_are_not_idempotent_retry_only_what_was_not_applied(time: FakeTime) -> None:
    ok = httpx.Response(200, json={"id": "r"})
    seen: list[httpx.Request] = []
    producer([refused(), error(503, "database_unavailable", "down"), ok], seen, time, api_token="at").cancel_run("r")
    assert len(seen) == 3 and seen[0].headers["authorization"] == "Bearer at"

    for maybe_applied in (httpx.ReadTimeout("slow"), error(504, "x", "gateway timeout")):
        seen = []
        with pytest.raises(ConveyorError):
            producer([maybe_applied, ok], seen, time, api_token="at").cancel_run("r")
        assert len(seen) == 1

    seen = []
    with pytest.raises(InvalidState, match="already ended"):
        producer([error(409, "invalid_state", "run r has already ended")], seen, time).cancel_run("r")
    with pytest.raises(NotFound, match="no run"):
        producer([error(404, "not_found", "no run 'r'")], seen, time).get_run("r")


def test_send_many_is_split_into_requests_of_1000(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([accepted()], seen, time)
    ids = p.send_many(Event("a.b", {"i": i}) for i in range(2500))
    assert [len(json.loads(r.content)) for r in seen] == [1000, 1000, 500]
    assert [e["id"] for r in seen for e in json.loads(r.content)] == ids


def test_a_failed_later_request_says_what_was_stored(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([accepted(), error(422, "invalid_input", "nope")], seen, time)
    with pytest.raises(InvalidInput, match="the first 1000 of 1500 events were stored"):
        p.send_many(Event("a.b") for _ in range(1500))


def test_async_sends_retry_the_same_way(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([refused(), error(503, "database_unavailable", "down", **{"Retry-After": "1"}), accepted()],
                 seen, time)

    async def main() -> str:
        try:
            return await p.asend("a.b", id="given")
        finally:
            await p.aclose()

    assert asyncio.run(main()) == "given"
    assert [json.loads(r.content)["id"] for r in seen] == ["given"] * 3
    assert time.sleeps == [0.05, 1.0]


def test_an_unexpected_answer_is_reported(time: FakeTime) -> None:
    seen: list[httpx.Request] = []
    p = producer([httpx.Response(200, json={"something": "else"})], seen, time, api_token="at")
    with pytest.raises(ConveyorError, match="unexpected answer"):
        p.get_run("r")


def test_secrets_and_urls_are_checked() -> None:
    make: Callable[..., Producer] = Producer
    with pytest.raises(ConfigError):
        make("http://h", event_key="")
    with pytest.raises(ConfigError):
        make("http://h", api_token="a\nb")
    assert make("https://h/prefix/").server_url == "https://h/prefix"
