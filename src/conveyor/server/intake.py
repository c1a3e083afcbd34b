"""Durable event intake with group commit.

Every request's events wait in a queue; one task commits whatever has gathered
in a single transaction (on SQLite with a full fsync) and only then answers each
request. Under load many requests share one commit, so intake scales with
requests in flight instead of paying a disk flush per request. An acknowledged
event is committed; a request whose commit failed gets an error and may be
retried with the same ids.

Every refused request is emitted as ``event.rejected`` (with its error code as the
reason) into the engine's hooks; the events stored are emitted by ``Engine.send``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.engine.events import make_event
from conveyor.errors import ConveyorError, DatabaseUnavailable, InvalidInput
from conveyor.observability import tracing
from conveyor.observability.hooks import EventsRejected, Hooks
from conveyor.observability.tracing import valid_traceparent
from conveyor.records import NewEvent
from conveyor.server.errors import ApiError

log = logging.getLogger("conveyor.server.intake")


@dataclass
class _Request:
    events: list[NewEvent]
    done: asyncio.Future[list[str]]


class Intake:
    """Commits events for many concurrent requests together."""

    def __init__(self, engine: Engine, *, max_pending: int, max_backlog: int | None,
                 max_commit: int = 5000, backlog_every: float = 1.0) -> None:
        self.engine = engine
        self.max_pending = max_pending
        self.max_backlog = max_backlog
        self.max_commit = max_commit
        self.backlog_every = backlog_every
        # SQLite has one writer: commits in parallel would only queue for its lock
        self.parallel = engine.storage.parallel_writes
        self._queue: list[_Request] = []
        self._pending = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._backlog = 0
        self._backlog_checked = 0.0
        self._closing = False

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._commit_loop(), name="conveyor-intake")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task

    # ---- requests -----------------------------------------------------------------------------

    async def submit(self, events: list[NewEvent]) -> list[str]:
        assert self._wake is not None, "intake not started"
        try:
            return await self._submit(events)
        except (ApiError, ConveyorError) as exc:
            rejected(self.engine.hooks, exc, len(events))
            raise

    async def _submit(self, events: list[NewEvent]) -> list[str]:
        assert self._wake is not None
        if self._closing:
            raise ApiError(503, "unavailable", "the server is shutting down", {"Retry-After": "1"})
        if self._pending + len(events) > self.max_pending:
            raise ApiError(429, "overloaded", "too many events waiting to be stored; retry shortly",
                           {"Retry-After": "1"})
        await self._check_backlog(len(events))
        request = _Request(events, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._pending += len(events)
        self._wake.set()
        return await request.done

    async def _check_backlog(self, n: int) -> None:
        if self.max_backlog is None:
            return
        now = time.monotonic()
        if now - self._backlog_checked > self.backlog_every:
            self._backlog_checked = now
            try:
                rows = await asyncio.to_thread(self.engine.storage.pools_backlog, time.time())
                self._backlog = sum(r.due for r in rows)
            except ConveyorError:
                pass  # the commit itself will say that the database is unavailable
        if self._backlog > self.max_backlog:
            raise ApiError(
                429, "overloaded",
                f"the backlog of due jobs ({self._backlog}) is over the server's limit ({self.max_backlog}); "
                "retry later", {"Retry-After": "5"},
            )

    # ---- the committer ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        slots = asyncio.Semaphore(self.parallel)
        running: set[asyncio.Task[None]] = set()
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            await slots.acquire()  # a commit slot first, so that the batch gathers meanwhile
            batch: list[_Request] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].events) <= self.max_commit):
                request = self._queue.pop(0)
                batch.append(request)
                count += len(request.events)
            task = asyncio.create_task(self._commit_batch(batch, count, slots))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _commit_batch(self, batch: list[_Request], count: int, slots: asyncio.Semaphore) -> None:
        try:
            await self._commit(batch)
        finally:
            self._pending -= count
            slots.release()

    async def _commit(self, batch: list[_Request]) -> None:
        events = [e for r in batch for e in r.events]
        try:
            await asyncio.to_thread(self.engine.send, events)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, DatabaseUnavailable):
                for request in batch:  # one request's fault must not fail the others
                    await self._commit([request])
                return
            failure = _failure(exc)
            for request in batch:
                if not request.done.done():
                    request.done.set_exception(failure)
            return
        for request in batch:
            if not request.done.done():
                request.done.set_result([e.id for e in request.events])


def _failure(exc: Exception) -> Exception:
    if isinstance(exc, ConveyorError):
        return exc
    log.error("storing events failed: %s: %s", type(exc).__name__, exc)
    return DatabaseUnavailable(f"the events could not be stored ({type(exc).__name__}); retry with the same ids")


# ---- parsing ------------------------------------------------------------------------------------

_FIELDS = frozenset({"name", "data", "id"})


def rejected(hooks: Hooks, exc: ApiError | ConveyorError, count: int) -> None:
    """Tell the hooks that a request's ``count`` events were refused with ``exc``'s code."""
    if hooks.wants(EventsRejected):
        hooks.emit(EventsRejected(exc.code, count))


def parse_events(
    body: bytes, engine: Engine, *, max_batch: int, max_event_bytes: int, traceparent: str | None = None,
) -> list[NewEvent]:
    """The request body as events, or an error: 400 if it is not JSON, 422 if the shape is wrong,
    413 if an event is too large. A batch with one bad event is rejected whole (and reported
    to the hooks as ``event.rejected``). A valid ``traceparent`` (the request's header) is the
    events' trace context, unless a span is current here (the server is instrumented)."""
    count = 1
    try:
        doc = _json(body)
        count = len(doc) if isinstance(doc, list) and doc else 1
        trace = tracing.current_traceparent() or valid_traceparent(traceparent)
        return _events(doc, engine, max_batch, max_event_bytes, trace)
    except (ApiError, ConveyorError) as exc:
        rejected(engine.hooks, exc, count)
        raise


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_INF = float("inf")
# strict JSON: UTF-8 only (json.loads would guess UTF-16 or -32 from bytes), no NaN or Infinity
_decode = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite).decode


def _json(body: bytes) -> Any:
    try:
        return _decode(body.decode("utf-8-sig"))  # a byte-order mark is allowed, nothing but UTF-8
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _events(doc: Any, engine: Engine, max_batch: int, max_event_bytes: int, trace: str | None) -> list[NewEvent]:
    if isinstance(doc, dict):
        items: list[Any] = [doc]
        label = "the event"
    elif isinstance(doc, list):
        if not doc:
            raise InvalidInput("the list of events is empty")
        if len(doc) > max_batch:
            raise InvalidInput(f"a request holds at most {max_batch} events, got {len(doc)}")
        items = doc
        label = "events[{}]"
    else:
        raise InvalidInput("the body must be an event object or a list of event objects")
    events = []
    for i, item in enumerate(items):
        where = label.format(i)
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be an object with 'name' and optional 'data' and 'id'")
        unknown = set(item) - _FIELDS
        if unknown:
            raise InvalidInput(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
        if "name" not in item:
            raise InvalidInput(f"{where} has no 'name'")
        if "id" in item and item["id"] is None:
            raise InvalidInput(f"{where}: 'id' must be a non-empty string when given")
        try:
            event = make_event(item["name"], item.get("data"), item.get("id"), trace)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        if len(event.data) > max_event_bytes // 4 and len(event.data.encode()) > max_event_bytes:
            raise ApiError(413, "too_large", f"{where}: its data is over {max_event_bytes} bytes of JSON")
        events.append(event)
    return events
