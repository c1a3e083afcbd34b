"""OpenTelemetry traces, at no cost unless the application configured OpenTelemetry.

OpenTelemetry is an optional extra (``pip install 'conveyor[otel]'``), and this module never
imports it: it looks for ``opentelemetry.trace`` among the modules the application has
already imported, and for a tracer provider that is not the default no-op proxy, at the
moment a span is wanted. Until both are there every call here returns at once and
nothing is recorded; once they are, the check is a lookup and an identity comparison.

The shape of a trace (the executor opens the spans, so pull workers and push endpoints
make the same ones):

* ``app.send`` (and ``fn.invoke``) store the current span's W3C ``traceparent`` with the
  event; ``POST /api/v1/events`` takes the request's ``traceparent`` header;
* each *invocation* of a run is a span ``conveyor.run <function-id>`` (kind CONSUMER) whose
  parent is its event's trace context, so it joins the sender's trace. A run that suspends
  (sleep, retry, wait, map) and resumes later has one such span per invocation, all in
  the same trace; with push delivery an invocation runs at most one new step;
* each step an invocation executes is a child span ``conveyor.step <step-id>``; steps replayed
  from the memo have none;
* the runs a ``map`` or ``invoke`` step starts, and the events ``send_event`` sends, carry
  that step span's context, so the children's run spans hang under the step that made them.

Without a configured provider a run still passes its event's ``traceparent`` on to the
runs it starts, so a trace crosses a process that does not record it.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_cache: tuple[object, Tracer | None] | None = None  # (the provider, our tracer from it or None)


def valid_traceparent(value: object) -> str | None:
    """``value`` if it is a W3C ``traceparent`` (version 00, non-zero ids), else None."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    match = TRACEPARENT.fullmatch(value)
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return value


def tracer() -> Tracer | None:
    """Conveyor's tracer when the application configured a tracer provider, else None."""
    global _cache
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    cached = _cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    found: Tracer | None = None
    if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        found = provider.get_tracer("conveyor", _version())
    _cache = (provider, found)
    return found


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this thread or task, if there is one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the current span (for log lines), if there is one."""
    traceparent = current_traceparent()
    return None if traceparent is None else (traceparent[3:35], traceparent[36:52])


# ---- spans ---------------------------------------------------------------------------------------


class NoSpan:
    """What the span calls return when nothing is traced: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def set(self, key: str, value: str | int | float | bool) -> None:
        return None

    def outcome(self, status: str, error: dict[str, Any] | None = None) -> None:
        return None

    def exception(self, exc: BaseException) -> None:
        return None

    def traceparent(self) -> str | None:
        return None


NO_SPAN = NoSpan()


class LiveSpan(NoSpan):
    """A recording span, current in this thread or task between ``__enter__`` and ``__exit__``."""

    __slots__ = ("_span", "_status", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None
        self._status = False

    def __enter__(self) -> LiveSpan:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        from opentelemetry import context

        try:
            if exc is not None and not self._status:  # left without a verdict: lease lost, interrupted
                self._span.set_attribute("conveyor.status", "abandoned")
                self._span.set_attribute("error.type", type(exc).__name__)
        finally:
            context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def outcome(self, status: str, error: dict[str, Any] | None = None) -> None:
        """The verdict: ``conveyor.status``, and an error status with its type and message."""
        self._status = True
        self._span.set_attribute("conveyor.status", status)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            kind = str(error.get("type") or "Error")
            self._span.set_attribute("error.type", kind)
            self._span.set_status(Status(StatusCode.ERROR, f"{kind}: {error.get('message', '')}"[:1000]))

    def exception(self, exc: BaseException) -> None:
        self._span.record_exception(exc)

    def traceparent(self) -> str | None:
        ctx = self._span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def run_span(function_id: str, run_id: str, event_name: str, parent: str | None) -> NoSpan:
    """The span of one invocation of a run, child of ``parent`` (its event's ``traceparent``;
    None: the root of a trace of its own). Enter it to make it current."""
    t = tracer()
    if t is None:
        return NO_SPAN
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    span = t.start_span(
        f"conveyor.run {function_id}", context=_context(parent) or Context(), kind=SpanKind.CONSUMER,
        attributes={"conveyor.function": function_id, "conveyor.run_id": run_id, "conveyor.event": event_name},
    )
    return LiveSpan(span)


def step_span(step_id: str, kind: str, attempt: int, run_id: str) -> NoSpan:
    """The span of one step executed in the current run span. Enter it to make it current."""
    t = tracer()
    if t is None:
        return NO_SPAN
    span = t.start_span(f"conveyor.step {step_id}", attributes={
        "conveyor.step": step_id, "conveyor.step.kind": kind, "conveyor.attempt": attempt, "conveyor.run_id": run_id,
    })
    return LiveSpan(span)


def _context(traceparent: str | None) -> Any:
    """An OpenTelemetry context whose (remote) parent is ``traceparent``."""
    if valid_traceparent(traceparent) is None:
        return None
    assert traceparent is not None
    from opentelemetry import trace

    sc = trace.SpanContext(trace_id=int(traceparent[3:35], 16), span_id=int(traceparent[36:52], 16), is_remote=True,
                           trace_flags=trace.TraceFlags(int(traceparent[53:55], 16)))
    return trace.set_span_in_context(trace.NonRecordingSpan(sc))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conveyor")
    except PackageNotFoundError:
        return "0"
