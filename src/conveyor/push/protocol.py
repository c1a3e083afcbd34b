"""The JSON of a push request (the dispatcher's invocation inputs) and of its response
(each invocation's step writes, outcome and logs). Version 1::

    request  {"v": 1, "now": <database clock>, "view_url": <url or null>,
              "invocations": [{"run_id", "function_id", "event": {"id", "name", "data", "ts"},
                               "memo": [<memo step>...], "failure": <error or null>,
                               "trace": <the event's W3C traceparent, if any>}]}
    response {"v": 1, "results": [{"run_id", "writes": [<step write>...], "outcome": <outcome>,
                                   "logs": [[step_id, attempt, ts, level, message]...]}
                                  | {"run_id", "error": {"type", "message"}}]}

Events a step creates (child runs' and ``send_event``'s) carry ``"trace"`` too, so the runs
they start join the trace of the step that made them. Step outputs travel as JSON *text*
(the string the database stores), so neither side re-encodes them. Decoding checks every
field's type: a malformed message raises :class:`ProtocolError` and nothing of it is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from conveyor.errors import InvalidInput
from conveyor.executor.inputs import InvocationInput
from conveyor.observability.tracing import valid_traceparent
from conveyor.records import (
    Completed,
    Failed,
    LogRecord,
    MemoStep,
    NewChild,
    NewEvent,
    NewWait,
    Outcome,
    StepWrite,
    Suspended,
)
from conveyor.types import Event, StepKind, utc_from_ts

VERSION = 1
KINDS = frozenset(k.value for k in StepKind)
STATUSES = frozenset({"completed", "failed", "retrying", "sleeping", "waiting", "creating"})
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
T = TypeVar("T")


class ProtocolError(InvalidInput):
    """A push message that is not valid JSON of the expected shape."""


@dataclass(slots=True)
class PushRequest:
    invocations: list[InvocationInput]
    now: float  # the database clock when the request was sent
    view_url: str | None = None


@dataclass(slots=True)
class PushResult:
    """One invocation's report; ``error`` set when the endpoint could not run it at all."""

    run_id: str
    writes: list[StepWrite] = field(default_factory=list)
    outcome: Outcome | None = None
    logs: list[LogRecord] = field(default_factory=list)
    error: dict[str, Any] | None = None


# ---- encoding ------------------------------------------------------------------------------------


def encode_request(req: PushRequest) -> bytes:
    return _encode({
        "v": VERSION, "now": req.now, "view_url": req.view_url,
        "invocations": [_input(i) for i in req.invocations],
    }).encode()


def _input(i: InvocationInput) -> dict[str, Any]:
    e = i.event
    return {
        "run_id": i.run_id, "function_id": i.function_id,
        "event": {"id": e.id, "name": e.name, "data": e.data, "ts": e.ts.timestamp() if e.ts else None},
        "memo": [_memo(m) for m in i.memo.values()], "failure": i.failure, "trace": i.trace,
    }


def _memo(m: MemoStep) -> dict[str, Any]:
    return {"id": m.id, "kind": m.kind, "status": m.status, "attempts": m.attempts, "output": m.output,
            "error": m.error, "wake_at": m.wake_at, "seq": m.seq, "started_at": m.started_at,
            "children_total": m.children_total, "children_created": m.children_created}


def encode_response(results: Sequence[PushResult]) -> bytes:
    return _encode({"v": VERSION, "results": [_result(r) for r in results]}).encode()


def _result(r: PushResult) -> dict[str, Any]:
    if r.error is not None:
        return {"run_id": r.run_id, "error": r.error}
    return {"run_id": r.run_id, "writes": [_write(w) for w in r.writes], "outcome": _outcome(r.outcome),
            "logs": [[lg.step_id, lg.attempt, lg.ts, lg.level, lg.message] for lg in r.logs]}


def _write(w: StepWrite) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": w.id, "kind": w.kind, "status": w.status, "attempts": w.attempts, "seq": w.seq, "output": w.output,
        "error": w.error, "wake_at": w.wake_at, "started_at": w.started_at, "ended_at": w.ended_at,
        "children_total": w.children_total, "children_created": w.children_created,
    }
    if w.events:
        out["events"] = [_event(e) for e in w.events]
    if w.children:
        out["children"] = [{"run_id": c.run_id, "function_id": c.function_id, "event": _event(c.event),
                            "parent_step": c.parent_step, "index": c.index, "pool": c.pool} for c in w.children]
    if w.wait is not None:
        wt = w.wait
        out["wait"] = {"event_name": wt.event_name, "match_path": wt.match_path, "match_value": wt.match_value,
                       "expires_at": wt.expires_at}
    return out


def _event(e: NewEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.id, "name": e.name, "data": e.data, "ts": e.ts}
    if e.trace is not None:
        out["trace"] = e.trace
    return out


def _outcome(o: Outcome | None) -> dict[str, Any]:
    if isinstance(o, Completed):
        return {"type": "completed", "output": o.output}
    if isinstance(o, Failed):
        return {"type": "failed", "error": o.error}
    if isinstance(o, Suspended):
        return {"type": "suspended", "run_at": o.run_at, "reason": o.reason}
    raise ValueError(f"an invocation result needs an outcome, got {o!r}")


# ---- decoding ------------------------------------------------------------------------------------


def _fail(what: str) -> ProtocolError:
    return ProtocolError(f"malformed push message: {what}")


_REQUIRED: Any = object()


def _get(d: dict[str, Any], key: str, check: Callable[[Any], bool], what: str, default: Any = _REQUIRED) -> Any:
    if key not in d:
        if default is _REQUIRED:
            raise _fail(f"{key!r} is missing")
        return default
    value = d[key]
    if not check(value):
        raise _fail(f"{key!r} must be {what}")
    return value


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_opt_int(v: Any) -> bool:
    return v is None or _is_int(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_opt_num(v: Any) -> bool:
    return v is None or _is_num(v)


def _is_opt_trace(v: Any) -> bool:
    return v is None or valid_traceparent(v) is not None


def _is_opt_dict(v: Any) -> bool:
    return v is None or isinstance(v, dict)


def _is_json_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        json.loads(v)
    except ValueError:
        return False
    return True


def _is_opt_json_text(v: Any) -> bool:
    return v is None or _is_json_text(v)


def _list(value: Any, what: str, item: Callable[[Any], T]) -> list[T]:
    if not isinstance(value, list):
        raise _fail(f"{what} must be a list")
    return [item(v) for v in value]


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{what} must be an object")
    return value


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _fail("the body is not JSON") from None
    except RecursionError:
        raise _fail("the body is nested too deeply") from None
    doc = _obj(doc, "the body")
    if doc.get("v") != VERSION:
        raise _fail(f"unsupported version {doc.get('v')!r} (this side speaks {VERSION})")
    return doc


def decode_request(body: bytes) -> PushRequest:
    doc = _load(body)
    now = _get(doc, "now", _is_num, "a number")
    view_url = _get(doc, "view_url", _is_opt_str, "a string or null", None)
    return PushRequest(_list(doc.get("invocations"), "invocations", _decode_input), float(now), view_url)


def _decode_input(value: Any) -> InvocationInput:
    d = _obj(value, "an invocation")
    ev = _obj(d.get("event"), "an invocation's event")
    event = Event(
        name=_get(ev, "name", _is_str, "a string"), data=ev.get("data"), id=_get(ev, "id", _is_opt_str, "a string"),
        ts=utc_from_ts(_get(ev, "ts", _is_opt_num, "a number or null", None)),
    )
    memo = {m.id: m for m in _list(d.get("memo", []), "memo", _decode_memo)}
    return InvocationInput(
        _get(d, "run_id", _is_str, "a string"), _get(d, "function_id", _is_str, "a string"), event, memo,
        _get(d, "failure", _is_opt_dict, "an object or null", None),
        trace=_get(d, "trace", _is_opt_trace, "a W3C traceparent or null", None),
    )


def _decode_memo(value: Any) -> MemoStep:
    m = _obj(value, "a memo step")
    return MemoStep(
        _get(m, "id", _is_str, "a string"), _get(m, "kind", _is_str, "a string"),
        _get(m, "status", _is_str, "a string"), _get(m, "attempts", _is_int, "an integer", 0),
        _get(m, "output", _is_opt_str, "JSON text or null", None), _get(m, "error", _is_opt_dict, "an object", None),
        _get(m, "wake_at", _is_opt_num, "a number", None), _get(m, "seq", _is_int, "an integer", 0),
        _get(m, "started_at", _is_opt_num, "a number", None),
        _get(m, "children_total", _is_opt_int, "an integer", None),
        _get(m, "children_created", _is_int, "an integer", 0),
    )


def decode_response(body: bytes) -> list[PushResult]:
    return _list(_load(body).get("results"), "results", _decode_result)


def _decode_result(value: Any) -> PushResult:
    d = _obj(value, "a result")
    run_id = _get(d, "run_id", _is_str, "a string")
    if "error" in d:
        error = _obj(d["error"], "a result's error")
        return PushResult(run_id, error={"type": str(error.get("type", "Error")), "message": str(error.get("message"))})
    writes = _list(d.get("writes", []), "writes", _decode_write)
    logs = _list(d.get("logs", []), "logs", _decode_log)
    return PushResult(run_id, writes, _decode_outcome(_obj(d.get("outcome"), "an outcome")), logs)


def _decode_write(value: Any) -> StepWrite:
    w = _obj(value, "a step write")
    kind = _get(w, "kind", lambda v: v in KINDS, f"one of {sorted(KINDS)}")
    status = _get(w, "status", lambda v: v in STATUSES, f"one of {sorted(STATUSES)}")
    wait = w.get("wait")
    return StepWrite(
        _get(w, "id", lambda v: isinstance(v, str) and bool(v), "a non-empty string"), kind, status,
        _get(w, "attempts", _is_int, "an integer"), _get(w, "seq", _is_int, "an integer"),
        output=_get(w, "output", _is_opt_json_text, "JSON text or null", None),
        error=_get(w, "error", _is_opt_dict, "an object or null", None),
        wake_at=_get(w, "wake_at", _is_opt_num, "a number or null", None),
        started_at=_get(w, "started_at", _is_opt_num, "a number or null", None),
        ended_at=_get(w, "ended_at", _is_opt_num, "a number or null", None),
        events=_list(w.get("events", []), "events", _decode_event),
        children=_list(w.get("children", []), "children", _decode_child),
        children_total=_get(w, "children_total", _is_opt_int, "an integer or null", None),
        children_created=_get(w, "children_created", _is_int, "an integer", 0),
        wait=None if wait is None else _decode_wait(wait),
    )


def _decode_event(value: Any) -> NewEvent:
    e = _obj(value, "an event")
    return NewEvent(_get(e, "id", _is_str, "a string"), _get(e, "name", _is_str, "a string"),
                    _get(e, "data", _is_json_text, "JSON text"), float(_get(e, "ts", _is_num, "a number")),
                    _get(e, "trace", _is_opt_trace, "a W3C traceparent or null", None))


def _decode_child(value: Any) -> NewChild:
    c = _obj(value, "a child run")
    return NewChild(
        _get(c, "run_id", _is_str, "a string"), _get(c, "function_id", _is_str, "a string"),
        _decode_event(c.get("event")), _get(c, "parent_step", _is_str, "a string"),
        _get(c, "index", _is_int, "an integer", 0),
        _get(c, "pool", lambda v: v is None or (isinstance(v, str) and bool(v)), "a pool name or null", None),
    )


def _decode_wait(value: Any) -> NewWait:
    w = _obj(value, "a wait")
    return NewWait(_get(w, "event_name", _is_str, "a string"), _get(w, "match_path", _is_opt_str, "a string"),
                   _get(w, "match_value", _is_opt_json_text, "JSON text"),
                   _get(w, "expires_at", _is_opt_num, "a number", None))


def _decode_log(value: Any) -> LogRecord:
    if not isinstance(value, list) or len(value) != 5:
        raise _fail("a log record must be [step_id, attempt, ts, level, message]")
    step_id, attempt, ts, level, message = value
    if not (_is_opt_str(step_id) and _is_int(attempt) and _is_num(ts) and _is_str(level) and _is_str(message)):
        raise _fail("a log record must be [step_id, attempt, ts, level, message]")
    return LogRecord(step_id, attempt, float(ts), level, message)


def _decode_outcome(o: dict[str, Any]) -> Outcome:
    kind = o.get("type")
    if kind == "completed":
        return Completed(_get(o, "output", _is_json_text, "JSON text"))
    if kind == "failed":
        return Failed(_obj(o.get("error"), "a failed outcome's error"))
    if kind == "suspended":
        return Suspended(_get(o, "run_at", _is_opt_num, "a number or null", None),
                         _get(o, "reason", _is_str, "a string"))
    raise _fail(f"unknown outcome type {kind!r}")


# ---- reads of a running step (the endpoint's view of the database) -------------------------------


def encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON of a view call or answer."""
    return _encode({"v": VERSION, **doc}).encode()


def decode(body: bytes) -> dict[str, Any]:
    """A view call or answer: a JSON object of this version."""
    return _load(body)
