"""The event catalog: what happens to runs, steps, events and push deliveries, by name.

The engine, the server and the push dispatcher *emit* these events; metrics (and anything
else: an alerting hook, a test) *subscribe* to them. The emitters never import a
subscriber, so the engine knows nothing of Prometheus, and a process with no subscriber
pays one dictionary lookup per emission point.

==================  =========================================  ==============================================
name                emitted                                    fields (besides ``function`` and ``run_id``)
==================  =========================================  ==============================================
``run.started``     a run's first claim (``Engine.claim``)     ``pool``
``run.completed``   its completion was committed               —
``run.failed``      it failed for good: now a dead letter      ``step_id``, ``error_type``, ``message``
``run.suspended``   an invocation stopped and will resume      ``reason`` (sleep, retry, wait, map, …),
                                                               ``run_at``
``step.completed``  a step ended well in an invocation         ``step_id``, ``kind``, ``attempts``,
                                                               ``duration`` (first attempt's start to end)
``step.failed``     a step failed for good                     as ``step.completed``, and ``error_type``
``step.retrying``   a failed attempt will be retried           ``step_id``, ``attempt`` (0-based),
                                                               ``error_type``, ``retry_at``
``event.accepted``  events were stored (``Engine.send``)       ``count`` (no function nor run)
``event.rejected``  ``POST /api/v1/events`` was refused        ``reason`` (the error code), ``count``
``delivery.failed`` a push delivery of a run produced nothing  ``pool``, ``url``, ``reason``, ``message``
==================  =========================================  ==============================================

Run and step events are emitted after their commit, and only for results whose fence
held (a worker that lost its lease reports nothing). ``map``, ``invoke`` and
``wait_for_event`` steps end in the database when their children or their event
arrive, not in an invocation, so they have no ``step.completed``.

Handlers run in the emitting thread (a committer, a claimer, the server's event loop):
they must be quick and must not block. One that raises is logged and skipped; it never
breaks the emitter. A handler that aggregates (metrics) subscribes with
:meth:`Hooks.subscribe_batch` and gets the events of one claim or commit in one call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

log = logging.getLogger(__name__)


class HookEvent:
    """Base of the catalog's events; ``name`` is the event's catalog name."""

    __slots__ = ()
    name: ClassVar[str]


@dataclass(slots=True)
class RunStarted(HookEvent):
    name: ClassVar[str] = "run.started"
    function: str
    run_id: str
    pool: str


@dataclass(slots=True)
class RunCompleted(HookEvent):
    name: ClassVar[str] = "run.completed"
    function: str
    run_id: str


@dataclass(slots=True)
class RunFailed(HookEvent):
    name: ClassVar[str] = "run.failed"
    function: str
    run_id: str
    step_id: str | None
    error_type: str
    message: str


@dataclass(slots=True)
class RunSuspended(HookEvent):
    name: ClassVar[str] = "run.suspended"
    function: str
    run_id: str
    reason: str
    run_at: float | None  # None: until something wakes it (an event, its children)


@dataclass(slots=True)
class StepCompleted(HookEvent):
    name: ClassVar[str] = "step.completed"
    function: str
    run_id: str
    step_id: str
    kind: str
    attempts: int
    duration: float | None


@dataclass(slots=True)
class StepFailed(HookEvent):
    name: ClassVar[str] = "step.failed"
    function: str
    run_id: str
    step_id: str
    kind: str
    attempts: int
    duration: float | None
    error_type: str


@dataclass(slots=True)
class StepRetrying(HookEvent):
    name: ClassVar[str] = "step.retrying"
    function: str
    run_id: str
    step_id: str
    attempt: int  # the attempt that failed, from 0 (as ``ctx.attempt``)
    error_type: str
    retry_at: float | None


@dataclass(slots=True)
class EventsAccepted(HookEvent):
    name: ClassVar[str] = "event.accepted"
    count: int


@dataclass(slots=True)
class EventsRejected(HookEvent):
    name: ClassVar[str] = "event.rejected"
    reason: str  # the error code answered: invalid_json, invalid_input, too_large, overloaded, …
    count: int  # the events of the request when it could be parsed, else 1


@dataclass(slots=True)
class DeliveryFailed(HookEvent):
    name: ClassVar[str] = "delivery.failed"
    function: str
    run_id: str
    pool: str
    url: str
    reason: str  # timeout, connection, http_status, signature, malformed, endpoint_error, prepare, crashed
    message: str


CATALOG: dict[str, type[HookEvent]] = {
    cls.name: cls
    for cls in (RunStarted, RunCompleted, RunFailed, RunSuspended, StepCompleted, StepFailed, StepRetrying,
                EventsAccepted, EventsRejected, DeliveryFailed)
}

E = TypeVar("E", bound=HookEvent)
Handler = Callable[[Any], None]


class Hooks:
    """Who listens to which event of the catalog. One per app (its engine emits into it).

    A handler takes one event (:meth:`subscribe`) or, to aggregate, every event of one
    emission at once (:meth:`subscribe_batch`: the engine emits a commit's events together,
    so a counter is incremented once per function per commit rather than once per run).
    Subscribing copies the table under a lock; emitting reads it without one, so an
    emission point costs a lookup when nobody listens.
    """

    def __init__(self) -> None:
        self._handlers: dict[type[HookEvent], tuple[tuple[Handler, bool], ...]] = {}
        self._lock = threading.Lock()
        self._warned: set[int] = set()

    @overload
    def subscribe(self, event: type[E], handler: Callable[[E], None]) -> Callable[[], None]: ...
    @overload
    def subscribe(self, event: str, handler: Handler) -> Callable[[], None]: ...

    def subscribe(self, event: type[HookEvent] | str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` on every emission of ``event`` (a catalog name or class);
        returns a function that unsubscribes it."""
        return self._add(_resolve(event), handler, batch=False)

    @overload
    def subscribe_batch(self, event: type[E], handler: Callable[[Sequence[E]], None]) -> Callable[[], None]: ...
    @overload
    def subscribe_batch(self, event: str, handler: Handler) -> Callable[[], None]: ...

    def subscribe_batch(self, event: type[HookEvent] | str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(events)`` with the events of each emission (one or more, never none)."""
        return self._add(_resolve(event), handler, batch=True)

    def _add(self, cls: type[HookEvent], handler: Handler, *, batch: bool) -> Callable[[], None]:
        entry = (handler, batch)
        with self._lock:
            table = dict(self._handlers)
            table[cls] = (*table.get(cls, ()), entry)
            self._handlers = table

        def unsubscribe() -> None:
            with self._lock:
                table = dict(self._handlers)
                rest = tuple(e for e in table.get(cls, ()) if e is not entry)
                if rest:
                    table[cls] = rest
                else:
                    table.pop(cls, None)
                self._handlers = table

        return unsubscribe

    @property
    def active(self) -> bool:
        """Whether anyone listens to anything (emitters skip their work when not)."""
        return bool(self._handlers)

    def wants(self, event: type[HookEvent]) -> bool:
        return event in self._handlers

    def emit(self, event: HookEvent) -> None:
        for handler, batch in self._handlers.get(type(event), ()):
            self._call(handler, [event] if batch else event, event.name)

    def emit_many(self, events: Sequence[HookEvent]) -> None:
        """Emit events of one kind together: batch handlers get them in one call."""
        if not events:
            return
        for handler, batch in self._handlers.get(type(events[0]), ()):
            if batch:
                self._call(handler, events, events[0].name)
            else:
                for event in events:
                    self._call(handler, event, event.name)

    def _call(self, handler: Handler, arg: Any, name: str) -> None:
        """Run one handler; an error in it is logged (in full the first time) and swallowed."""
        try:
            handler(arg)
        except Exception:
            first = id(handler) not in self._warned
            self._warned.add(id(handler))
            log.warning("a handler of %s failed: %r", name, handler, exc_info=first)


def _resolve(event: type[HookEvent] | str) -> type[HookEvent]:
    if isinstance(event, str):
        try:
            return CATALOG[event]
        except KeyError:
            raise ValueError(f"unknown event {event!r}; the catalog has {', '.join(sorted(CATALOG))}") from None
    if isinstance(event, type) and issubclass(event, HookEvent) and event is not HookEvent:
        return event
    raise TypeError(f"subscribe takes a catalog name or event class, got {event!r}")
