"""The producer's side of the HTTP API, free of I/O: calls, the retry loop, errors, JSON.

Each operation (``send_op``, ``list_runs_op``, ...) is a generator that yields the
:class:`Call` s it needs and receives their successful :class:`Reply` s; :func:`plan`
runs each call through :func:`exchange`, the retry loop, which yields :class:`Attempt`
(make the request) and :class:`Pause` (sleep) and is told the outcome. The sync and async
shells that do the I/O are in :mod:`conveyor.sdk.producer`; the retry policy and how
the server's answers become errors are described there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

from conveyor.engine.events import make_event
from conveyor.errors import (
    ConfigError,
    ConveyorError,
    InvalidInput,
    InvalidState,
    NotFound,
    ServerUnavailable,
)
from conveyor.records import NewEvent
from conveyor.types import Event, Progress, Run, StepRecord, ts_from_datetime

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVER_URL_ENV = "CONVEYOR_SERVER_URL"
EVENT_KEY_ENV = "CONVEYOR_EVENT_KEY"
API_TOKEN_ENV = "CONVEYOR_API_TOKEN"
EVENTS_PATH = "/api/v1/events"
MAX_BATCH = 1000  # events per request (a server's default --max-batch)
MAX_BODY = 8 * 1024 * 1024  # bytes per request; the server accepts 16 MiB
MAX_EVENT_DATA = 1024 * 1024  # bytes of JSON data per event (the server's limit)
PAGE = 500  # runs per page (the server's maximum)
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
REFUSED_STATUSES = frozenset({429, 503})  # the server did not apply the request

# ---- the retry loop, free of I/O ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The server, and which secrets this producer has (for the messages of errors)."""

    url: str
    event_key: bool = False
    api_token: bool = False

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request of an operation."""

    method: str
    path: str
    what: str  # for messages: "send", "get_run", ...
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    management: bool = False  # authenticated with the API token
    idempotent: bool = True  # safe to repeat even if an earlier attempt may have been applied


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    retry_after: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """Make the request, with this timeout (seconds); send back a :class:`Reply` or the exception."""

    call: Call
    timeout: float


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter within a total time budget.

    The n-th retry waits ``min(cap, base * factor**n)`` scaled by a random factor in
    ``[1 - jitter, 1]``; a ``Retry-After`` from the server is honoured (plus up to 10 %).
    """

    budget: float = 30.0
    base: float = 0.05
    factor: float = 2.0
    cap: float = 2.0
    jitter: float = 0.5
    connect_timeout: float = 5.0

    def delay(self, retry: int, retry_after: float | None, rand: float) -> float:
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * rand)
        return min(self.cap, self.base * self.factor ** retry) * (1.0 - self.jitter * rand)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


Exchange = Generator[Attempt | Pause, Reply | Exception | None, Reply]


def exchange(
    call: Call,
    server: Target,
    policy: RetryPolicy,
    clock: Callable[[], float],
    rand: Callable[[], float],
    wall: Callable[[], float] = time.time,
) -> Exchange:
    """Make ``call`` until it succeeds, fails for good, or the budget is spent.

    Yields :class:`Attempt` (to be answered with a :class:`Reply`, or the transport
    exception) and :class:`Pause`; returns the successful (2xx) reply.
    """
    deadline = clock() + policy.budget
    retry = 0
    while True:
        outcome = yield Attempt(call, max(0.001, deadline - clock()))
        if isinstance(outcome, Reply):
            if 200 <= outcome.status < 300:
                return outcome
            if outcome.status not in RETRIED_STATUSES or (
                not call.idempotent and outcome.status not in REFUSED_STATUSES
            ):
                raise error_for(call, server, outcome)
            last = f"{outcome.status} {_message(outcome)}"
            retry_after = parse_retry_after(outcome.retry_after, wall())
        else:
            assert isinstance(outcome, Exception)
            last = f"{type(outcome).__name__}: {outcome}" if str(outcome) else type(outcome).__name__
            if not call.idempotent and not _never_sent(outcome):
                raise ServerUnavailable(
                    f"{call.what}: the request to the Conveyor server at {server} failed ({last}); "
                    "it may or may not have been applied"
                )
            retry_after = None
        delay = policy.delay(retry, retry_after, rand())
        if clock() + delay >= deadline:
            attempts = retry + 1
            raise ServerUnavailable(
                f"{call.what}: the Conveyor server at {server} did not succeed within {policy.budget:g} s "
                f"({attempts} attempt{'s' if attempts > 1 else ''}; last error: {last})"
            )
        log.debug("%s: retrying %s %s in %.3f s after %s", call.what, call.method, call.path, delay, last)
        yield Pause(delay)
        retry += 1


def _never_sent(exc: Exception) -> bool:
    """The request surely did not reach the server: no connection was made."""
    return type(exc).__name__ in ("ConnectError", "ConnectTimeout", "PoolTimeout")


def _message(reply: Reply) -> str:
    """The server's error message, or the start of whatever it answered."""
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        err = reply.json()["error"]
        return f"{err['message']}"
    text = reply.body[:200].decode("utf-8", "replace").strip()
    return text or "(empty response)"


def error_for(call: Call, server: Target, reply: Reply) -> ConveyorError:
    """The error a non-retried answer raises."""
    status, message = reply.status, _message(reply)
    if status == 401:
        if call.management:
            given = "the API token" if server.api_token else "no API token: give api_token= or $" + API_TOKEN_ENV
            return ConfigError(f"{call.what}: the server at {server} rejected the request ({message}; {given})")
        if not server.event_key and not server.api_token:
            return ConfigError(f"the server at {server} needs an event key: give event_key= or ${EVENT_KEY_ENV}")
        what = "event key" if server.event_key else "API token"
        return ConfigError(f"the server at {server} rejected the {what} ({message})")
    if status in (400, 413, 422):
        return InvalidInput(f"{call.what}: the server refused the request ({status}): {message}")
    if status == 409:
        return InvalidState(message)
    if status in (404, 405) and call.path == EVENTS_PATH:
        return ConfigError(
            f"no Conveyor API at {server}: {call.method} {call.path} answered {status} ({message}); "
            "is server_url the address of `conveyor server`?"
        )
    if status == 404:
        return NotFound(message)
    return ConveyorError(f"{call.what}: the server at {server} answered {status}: {message}")


# ---- operations, free of I/O: they yield calls and get back successful replies -----------------

Op = Generator[Call, Reply, T]


def plan(op: Op[T], server: Target, policy: RetryPolicy, clock: Callable[[], float],
         rand: Callable[[], float]) -> Generator[Attempt | Pause, Reply | Exception | None, T]:
    """An operation with each of its calls run through :func:`exchange`: what the shells drive."""
    try:
        call = next(op)
        while True:
            try:
                reply = yield from exchange(call, server, policy, clock, rand)
            except ConveyorError as exc:
                op.throw(exc)  # the operation may add what it knows, and re-raises
                raise
            try:
                call = op.send(reply)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConveyorError(
                    f"{call.what}: unexpected answer from the server at {server} to {call.method} {call.path} "
                    f"({type(exc).__name__}: {exc}); is it a Conveyor server of the same version?"
                ) from None
    except StopIteration as done:
        result: T = done.value
        return result


def _event_json(event: NewEvent) -> bytes:
    if len(event.data) > MAX_EVENT_DATA // 4 and (size := len(event.data.encode())) > MAX_EVENT_DATA:
        raise InvalidInput(f"the data of event {event.name!r} is {size} bytes of JSON; the server accepts 1 MiB")
    name = json.dumps(event.name, ensure_ascii=False)
    return f'{{"id":{json.dumps(event.id, ensure_ascii=False)},"name":{name},"data":{event.data}}}'.encode()


def send_op(name: Any, data: Any, event_id: Any) -> Op[str]:
    event = make_event(name, data, event_id)  # the id is fixed here: every retry carries it
    yield Call("POST", EVENTS_PATH, "send", _event_json(event))
    return event.id


def send_many_op(events: Iterable[Event]) -> Op[list[str]]:
    encoded: list[tuple[str, bytes]] = []
    for ev in events:  # every event is checked (and given its id) before anything is sent
        if not isinstance(ev, Event):
            raise InvalidInput(f"send_many takes conveyor.Event objects, got {type(ev).__name__}")
        new = make_event(ev.name, ev.data, ev.id)
        encoded.append((new.id, _event_json(new)))
    sent: list[str] = []
    for batch in _batches(encoded):
        try:
            yield Call("POST", EVENTS_PATH, "send_many", b"[" + b",".join(body for _, body in batch) + b"]")
        except ConveyorError as exc:
            if sent:
                exc.message = (f"{exc.message} (the first {len(sent)} of {len(encoded)} events were stored by "
                               "earlier requests; sending them again with the same ids is safe)")
                exc.args = (exc.message,)
            raise
        sent.extend(event_id for event_id, _ in batch)
    return sent


def _batches(encoded: list[tuple[str, bytes]]) -> Iterable[list[tuple[str, bytes]]]:
    """Requests of at most 1,000 events and 8 MiB each (one transaction each on the server)."""
    batch: list[tuple[str, bytes]] = []
    size = 2
    for item in encoded:
        if batch and (len(batch) == MAX_BATCH or size + len(item[1]) + 1 > MAX_BODY):
            yield batch
            batch, size = [], 2
        batch.append(item)
        size += len(item[1]) + 1
    if batch:
        yield batch


def get_run_op(run_id: str) -> Op[Run]:
    reply = yield Call("GET", f"/api/v1/runs/{_seg(run_id)}", "get_run", management=True)
    return run_from_json(reply.json())


def list_op(what: str, path: str, key: str, params: dict[str, str | None], limit: int) -> Op[list[Run]]:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInput("limit must be a positive integer")
    query = {k: v for k, v in params.items() if v is not None}
    runs: list[Run] = []
    cursor: str | None = None
    while len(runs) < limit:
        page = dict(query, limit=str(min(PAGE, limit - len(runs))))
        if cursor:
            page["cursor"] = cursor
        reply = yield Call("GET", path, what, params=page, management=True)
        doc = reply.json()
        runs.extend(run_from_json(r) for r in doc[key])
        cursor = doc.get("next")
        if not cursor or not doc[key]:
            break
    return runs[:limit]


def runs_for_event_op(event_id: str) -> Op[list[Run]]:
    if not isinstance(event_id, str) or not event_id:
        raise InvalidInput(f"an event id must be a non-empty string, got {event_id!r}")
    return (yield from list_op("runs_for_event", "/api/v1/runs", "runs", {"event_id": event_id}, 10_000))


def list_runs_op(
    function: str | None, status: str | None, limit: int, since: datetime | None = None, event_id: str | None = None,
) -> Op[list[Run]]:
    after = None if since is None else datetime.fromtimestamp(ts_from_datetime(since), UTC).isoformat()
    params = {"function": function, "status": status, "since": after, "event_id": event_id}
    return (yield from list_op("list_runs", "/api/v1/runs", "runs", params, limit))


def dead_letters_op(limit: int) -> Op[list[Run]]:
    return (yield from list_op("dead_letters", "/api/v1/dead-letters", "dead_letters", {}, limit))


def logs_op(run_id: str) -> Op[list[dict[str, Any]]]:
    reply = yield Call("GET", f"/api/v1/runs/{_seg(run_id)}/logs", "run_logs", management=True)
    logs: list[dict[str, Any]] = reply.json()["logs"]
    for record in logs:  # timestamps as the database app gives them: seconds since the epoch
        if isinstance(record.get("ts"), str):
            when = _time(record["ts"])
            record["ts"] = when.timestamp() if when else None
    return logs


def run_action_op(run_id: str, action: str) -> Op[None]:
    yield Call("POST", f"/api/v1/runs/{_seg(run_id)}/{action}", f"{action}_run", management=True, idempotent=False)


def redrive_op(run_ids: Sequence[str] | None) -> Op[list[str]]:
    if run_ids is not None and (isinstance(run_ids, str) or not all(isinstance(i, str) for i in run_ids)):
        raise InvalidInput("run_ids must be a list of run ids (strings)")
    ids = None if run_ids is None else list(run_ids)
    if ids == []:
        return []
    body = json.dumps({} if ids is None else {"run_ids": ids}).encode()
    reply = yield Call("POST", "/api/v1/dead-letters/redrive", "redrive", body, management=True, idempotent=False)
    done: list[str] = (reply.json() or {}).get("run_ids", ids or [])
    return done


def _seg(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"a run id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


# ---- JSON to the public types -------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def run_from_json(doc: dict[str, Any]) -> Run:
    """A :class:`Run` from the server's run (or run summary) JSON."""
    p = doc.get("progress")
    progress = None if p is None else Progress(
        total=p.get("total", 0), queued=p.get("queued", 0), running=p.get("running", 0),
        waiting=p.get("waiting", 0), completed=p.get("completed", 0), failed=p.get("failed", 0),
        cancelled=p.get("cancelled", 0), started_at=_time(p.get("started_at")), rate=p.get("rate", 0.0),
        eta=p.get("eta"),
    )
    steps = [
        StepRecord(s["id"], s["kind"], s["status"], s["attempts"], s.get("output"), s.get("error"),
                   _time(s.get("started_at")), _time(s.get("ended_at")), _time(s.get("wake_at")))
        for s in doc.get("steps") or ()
    ]
    return Run(
        id=doc["id"], function_id=doc["function_id"], event_id=doc["event_id"], status=doc["status"],
        output=doc.get("output"), error=doc.get("error"), steps=steps, parent_id=doc.get("parent_id"),
        progress=progress, pool=doc.get("pool") or "default", created_at=_time(doc.get("created_at")),
        started_at=_time(doc.get("started_at")), ended_at=_time(doc.get("ended_at")),
    )
