"""The push wire format: every record survives a round trip; malformed messages are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conveyor.executor.inputs import InvocationInput
from conveyor.push.protocol import (
    ProtocolError,
    PushRequest,
    PushResult,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from conveyor.records import (
    Completed,
    Failed,
    LogRecord,
    MemoStep,
    NewChild,
    NewEvent,
    NewWait,
    StepWrite,
    Suspended,
)
from conveyor.types import Event

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_request_round_trips() -> None:
    memo = {"a": MemoStep("a", "run", "completed", 1, '{"x":[1,2]}', None, None, 1, 10.0),
            "m": MemoStep("m", "map", "creating", 0, None, None, None, 2, 11.0, None, 1000)}
    inp = InvocationInput("r1", "f", Event("go", {"k": "é"}, "e1", datetime.fromtimestamp(5.5, UTC)), memo,
                          {"type": "Boom", "message": "no"})
    req = decode_request(encode_request(PushRequest([inp], 123.25, "http://srv/api/v1/push/view")))
    assert (req.now, req.view_url) == (123.25, "http://srv/api/v1/push/view")
    [got] = req.invocations
    assert (got.run_id, got.function_id, got.failure) == ("r1", "f", {"type": "Boom", "message": "no"})
    assert got.event == inp.event and got.memo == memo


@pytest.mark.parametrize("outcome", [Completed('{"ok":true}'), Failed({"type": "X", "message": "m"}),
                                     Suspended(None, "map"), Suspended(12.5, "yield")])
def test_a_response_round_trips(outcome: object) -> None:
    child = NewChild("c1", "g", NewEvent("c1", "conveyor/map", '{"i":1}', 3.0), "fan", 4, "background")
    writes = [
        StepWrite("a", "run", "completed", 1, 1, output='"x"', started_at=1.0, ended_at=2.0),
        StepWrite("s", "send_event", "completed", 1, 2, output='"e"', events=[NewEvent("e", "n", "{}", 2.0)]),
        StepWrite("fan", "map", "creating", 0, 3, children=[child], children_created=1),
        StepWrite("w", "wait_for_event", "waiting", 0, 4, wake_at=9.0, wait=NewWait("ok", "data.id", '"7"', 9.0)),
        StepWrite("b", "run", "retrying", 2, 5, error={"type": "E", "message": "m"}, wake_at=7.0),
    ]
    logs = [LogRecord("a", 0, 1.5, "INFO", "hello"), LogRecord(None, 0, 1.6, "WARNING", "between")]
    sent = [PushResult("r1", writes, outcome, logs), PushResult("r2", error={"type": "NotFound", "message": "m"})]  # type: ignore[arg-type]
    got = decode_response(encode_response(sent))
    assert got == sent


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


GOOD_WRITE = {"id": "a", "kind": "run", "status": "completed", "attempts": 1, "seq": 1, "output": "1"}


@pytest.mark.parametrize("raw", [
    b"not json",
    body([]),
    body({"v": 2, "results": []}),
    body({"v": 1, "results": {}}),
    body({"v": 1, "results": [{"writes": []}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [], "outcome": {"type": "exploded"}}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [{**GOOD_WRITE, "kind": "teleport"}],
                               "outcome": {"type": "completed", "output": "1"}}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [{**GOOD_WRITE, "output": "{not json"}],
                               "outcome": {"type": "completed", "output": "1"}}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [{**GOOD_WRITE, "attempts": -1}],
                               "outcome": {"type": "completed", "output": "1"}}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [], "outcome": {"type": "completed", "output": "1"},
                               "logs": [["a", 0, 1.0, "INFO"]]}]}),
    body({"v": 1, "results": [{"run_id": "r", "writes": [], "outcome": {"type": "suspended", "run_at": "soon",
                                                                     "reason": "sleep"}}]}),
])
def test_malformed_responses_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_response(raw)


@pytest.mark.parametrize("raw", [
    b"\xff\xfe",
    body({"v": 1, "now": "later", "invocations": []}),
    body({"v": 1, "now": 1.0, "invocations": [{"run_id": "r", "function_id": "f"}]}),
    body({"v": 1, "now": 1.0, "invocations": [{"run_id": 3, "function_id": "f", "event": {"name": "n"}}]}),
])
def test_malformed_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(raw)


def test_the_protocol_carries_the_trace_both_ways() -> None:
    inp = InvocationInput("r1", "f", Event(name="e", data={}, id="e1"), trace=TRACEPARENT)
    [back] = decode_request(encode_request(PushRequest([inp], 1.0))).invocations
    assert back.trace == TRACEPARENT
    [untraced] = decode_request(encode_request(PushRequest([InvocationInput("r2", "f", Event(name="e"))], 1.0))
                                ).invocations
    assert untraced.trace is None
    bad = encode_request(PushRequest([inp], 1.0)).replace(TRACEPARENT.encode(), b"00-nope")
    with pytest.raises(ProtocolError, match="traceparent"):
        decode_request(bad)

    child = NewChild("c1", "g", NewEvent("c1", "conveyor/map", "1", 1.0, TRACEPARENT), "split")
    write = StepWrite("split", "map", "waiting", 0, 1, children=[child], children_total=1,
                      events=[NewEvent("x", "sent", "{}", 1.0, TRACEPARENT), NewEvent("y", "sent", "{}", 1.0)])
    [result] = decode_response(encode_response([PushResult("r1", [write], Suspended(None, "map"))]))
    [w] = result.writes
    assert w.children[0].event.trace == TRACEPARENT
    assert [e.trace for e in w.events] == [TRACEPARENT, None]
