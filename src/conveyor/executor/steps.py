"""``ctx.step``: the durable step calls, written once.

``SyncSteps`` holds every step. ``AsyncSteps`` awaits the user's body in ``run``
and gets the other steps (which never block) as generated awaitable twins.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import StepError
from conveyor.executor import codec
from conveyor.executor.ops import FatalRunError
from conveyor.records import NewChild, NewEvent, NewWait, StepWrite, Suspended
from conveyor.types import Event, StepKind

if TYPE_CHECKING:
    from conveyor.executor.invocation import Invocation


def _seconds(value: float | timedelta, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise FatalRunError({"step_id": None, "type": "InvalidInput", "message": f"{what} must be seconds or a timedelta"})


def target_id(function: Any) -> str:
    fid = function if isinstance(function, str) else getattr(function, "id", None)
    if not isinstance(fid, str):
        raise FatalRunError({
            "step_id": None, "type": "InvalidInput",
            "message": f"invoke/map need a registered function or its id, got {function!r}",
        })
    return fid


def pool_name(pool: Any) -> str | None:
    if pool is None or (isinstance(pool, str) and pool):
        return pool
    raise FatalRunError({"step_id": None, "type": "InvalidInput", "message": "pool must be a non-empty string"})


def _path_value(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.removeprefix("event.").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class SyncSteps:
    """Steps for a ``def`` function: each call returns its result directly."""

    __slots__ = ("_inv",)

    def __init__(self, invocation: Invocation) -> None:
        self._inv = invocation

    def run(self, id: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once and memoize its JSON-serializable result."""
        inv = self._inv
        sid = inv.step_id(id)
        memo, started = inv.run_begin(sid)
        if memo is not None and memo.status in ("completed", "failed"):
            return inv.replay_value(memo)
        inv.settle()
        with inv.step_span(sid, StepKind.RUN):
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = asyncio.run(_await(value))
            except BaseException as exc:
                return inv.run_failed(sid, memo, started, exc)
            return inv.run_succeeded(sid, memo, started, value)

    def sleep(self, id: str, duration: float | timedelta) -> None:
        """Sleep durably: the run suspends and no worker is held until it wakes."""
        seconds = _seconds(duration, "sleep duration")
        return self._sleep(id, lambda now: now + seconds)

    def sleep_until(self, id: str, when: datetime) -> None:
        """Sleep durably until ``when`` (a naive datetime is taken as UTC)."""
        if not isinstance(when, datetime):
            raise FatalRunError({"step_id": id, "type": "InvalidInput", "message": "sleep_until needs a datetime"})
        ts = when.timestamp() if when.tzinfo else when.replace(tzinfo=_UTC).timestamp()
        return self._sleep(id, lambda _now: ts)

    def _sleep(self, id: str, wake: Callable[[float], float]) -> None:
        inv = self._inv
        sid = inv.step_id(id)
        memo = inv.lookup(sid, StepKind.SLEEP)
        now = inv.clock()
        if memo is not None and memo.status == "completed":
            return None
        if memo is not None and memo.wake_at is not None and now < memo.wake_at:
            raise inv.suspend(Suspended(memo.wake_at, "sleep"))
        with inv.step_span(sid, StepKind.SLEEP):
            if memo is None:
                wake_at = wake(now)
                if wake_at > now:
                    write = StepWrite(sid, StepKind.SLEEP, "sleeping", 0, inv.next_seq(None),
                                      wake_at=wake_at, started_at=now)
                    raise inv.suspend(Suspended(wake_at, "sleep"), write)
            inv.emit(StepWrite(
                sid, StepKind.SLEEP, "completed", 1, inv.next_seq(memo),
                wake_at=memo.wake_at if memo else now, started_at=memo.started_at if memo else now, ended_at=now,
            ))
        inv.maybe_yield()
        return None

    def wait_for_event(
        self, id: str, *, event: str, match: str | None = None, timeout: float | timedelta | None = None
    ) -> Event | None:
        """The first later event named ``event`` whose ``match`` path equals this run's; ``None`` on timeout."""
        inv = self._inv
        sid = inv.step_id(id)
        memo = inv.lookup(sid, StepKind.WAIT_FOR_EVENT)
        if memo is not None and memo.status == "completed":
            data = codec.loads(memo.output)
            if data is None:
                return None
            return Event(name=data["name"], data=data["data"], id=data["id"], ts=_ts(data.get("ts")))
        if memo is not None:  # woken early: keep waiting
            raise inv.suspend(Suspended(memo.wake_at, "wait"))
        with inv.step_span(sid, StepKind.WAIT_FOR_EVENT):
            now = inv.clock()
            expires = None if timeout is None else now + _seconds(timeout, "timeout")
            value = None if match is None else codec.dumps(_path_value(inv.event_dict(), match))
            write = StepWrite(
                sid, StepKind.WAIT_FOR_EVENT, "waiting", 0, inv.next_seq(None), wake_at=expires, started_at=now,
                wait=NewWait(event, match, value, expires),
            )
            raise inv.suspend(Suspended(expires, "wait"), write)

    def invoke(self, id: str, function: Any, data: Any = None, *, pool: str | None = None) -> Any:
        """Start a run of ``function`` with ``data``, suspend, and return its output.

        ``pool`` sends the run to another pool than the function's own (e.g. a push endpoint
        that serves background work)."""
        inv = self._inv
        sid = inv.step_id(id)
        memo = inv.lookup(sid, StepKind.INVOKE)
        if memo is not None and memo.status in ("completed", "failed"):
            return inv.replay_value(memo)
        if memo is not None:
            raise inv.suspend(Suspended(None, "invoke"))
        with inv.step_span(sid, StepKind.INVOKE):
            fid = target_id(function)
            pool = pool_name(pool)
            now = inv.clock()
            payload = codec.dumps({} if data is None else data, what=f"the data of invoke step {sid!r}")
            event = NewEvent(f"{inv.run_id}/{sid}", "conveyor/invoke", payload, now, inv.trace_context())
            child = NewChild(inv.new_id(), fid, event, sid, pool=pool)
            inv.require_function(sid, StepKind.INVOKE, fid)
            write = StepWrite(sid, StepKind.INVOKE, "waiting", 0, inv.next_seq(None), started_at=now,
                              children=[child], children_total=1)
            raise inv.suspend(Suspended(None, "invoke"), write)

    def send_event(self, id: str, name: str, data: Any = None, *, event_id: str | None = None) -> str:
        """Send an event exactly once; returns its id."""
        inv = self._inv
        sid = inv.step_id(id)
        memo = inv.lookup(sid, StepKind.SEND_EVENT)
        if memo is not None and memo.status == "completed":
            return str(codec.loads(memo.output))
        if not isinstance(name, str) or not name:
            raise StepError(sid, "InvalidInput", "an event name must be a non-empty string")
        with inv.step_span(sid, StepKind.SEND_EVENT):
            now = inv.clock()
            eid = event_id or f"{inv.run_id}/{sid}"
            payload = codec.dumps({} if data is None else data, what=f"the data of event {name!r}")
            inv.emit(StepWrite(
                sid, StepKind.SEND_EVENT, "completed", 1, inv.next_seq(memo), output=codec.dumps(eid),
                started_at=now, ended_at=now, events=[NewEvent(eid, name, payload, now, inv.trace_context())],
            ))
        inv.maybe_yield()
        return eid

    def map(
        self, id: str, function: Any, items: Iterable[Any], *, allow_failures: bool = False, pool: str | None = None
    ) -> Any:
        """One child run of ``function`` per item; suspends until every child ended.

        Returns the outputs in item order as a lazy sequence. If a child failed it raises
        ``StepError`` (after all ended), unless ``allow_failures=True``: then a failed
        child's output is ``None`` and ``results.failures()`` lists ``(index, error)``.
        ``pool`` sends the children to another pool than the function's own.
        """
        from conveyor.executor.fanout import map_step

        return map_step(self._inv, id, function, items, allow_failures, pool_name(pool))


class AsyncSteps(SyncSteps):
    """Steps for an ``async def`` function: each call is awaited."""

    __slots__ = ()

    async def run(self, id: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        inv = self._inv
        sid = inv.step_id(id)
        memo, started = inv.run_begin(sid)
        if memo is not None and memo.status in ("completed", "failed"):
            return inv.replay_value(memo)
        await inv.asettle()
        with inv.step_span(sid, StepKind.RUN):
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:
                return inv.run_failed(sid, memo, started, exc)
            return inv.run_succeeded(sid, memo, started, value)


def _async_twin(name: str) -> Any:
    sync = getattr(SyncSteps, name)

    @functools.wraps(sync)
    async def twin(self: AsyncSteps, *args: Any, **kwargs: Any) -> Any:
        return sync(self, *args, **kwargs)

    return twin


for _name in ("sleep", "sleep_until", "wait_for_event", "invoke", "send_event", "map"):
    setattr(AsyncSteps, _name, _async_twin(_name))


async def _await(value: Any) -> Any:
    return await value


from datetime import UTC  # noqa: E402

_UTC = UTC


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, tz=_UTC) if isinstance(value, int | float) else None
