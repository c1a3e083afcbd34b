"""One invocation: call the function from the top, replay the memo, run to suspension.

The step logic lives here once, I/O-free; ``steps.SyncSteps`` and
``steps.AsyncSteps`` are thin shells that differ only in how they call the
user's step body (directly, or awaited).

When OpenTelemetry is configured, an invocation is a span and each step it executes a
child span (:mod:`conveyor.observability.tracing`); since pull workers and push
endpoints both run invocations, both trace the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.errors import NonRetriableError, RetryAfterError, SerializationError, StepError
from conveyor.executor import codec
from conveyor.executor.context import Context
from conveyor.executor.ops import FatalRunError, LeaseLost, Suspend
from conveyor.executor.retry import retry_delay
from conveyor.observability import tracing
from conveyor.records import Completed, Failed, LogRecord, MemoStep, Outcome, StepWrite, Suspended
from conveyor.types import Backoff, Event, StepKind


class Ack(Protocol):
    """The promise of a checkpoint's commit: ``result()`` is True once committed, False if fenced out."""

    def result(self, timeout: float | None = None) -> bool: ...


# A sink takes a step checkpoint; it may return an Ack to wait on before the next step body.
Sink = Callable[[StepWrite], "Ack | None"]


class StorageView(Protocol):
    """What steps may read while they run: which functions exist, and children's results."""

    def function_exists(self, function_id: str) -> bool: ...
    def children_outputs(self, run_id: str, step_id: str, offset: int, limit: int) -> list[str | None]: ...
    def child_error(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None: ...
RESOLVED = ("completed", "failed")


def error_dict(exc: BaseException, step_id: str | None) -> dict[str, Any]:
    if isinstance(exc, StepError):
        return {"step_id": exc.step_id or step_id, "type": exc.error_type, "message": exc.message}
    message = exc.message if isinstance(exc, NonRetriableError | RetryAfterError) else str(exc)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=20))
    return {"step_id": step_id, "type": type(exc).__name__, "message": message, "traceback": tb[-8000:]}


@dataclass(slots=True)
class InvocationResult:
    outcome: Outcome
    final_write: StepWrite | None = None
    logs: list[LogRecord] = field(default_factory=list)
    steps_run: int = 0


class Invocation:
    """Runs one function of one run against its memo until it completes, fails or suspends."""

    def __init__(
        self,
        *,
        fn: Callable[..., Any],
        function_id: str,
        run_id: str,
        event: Event,
        memo: dict[str, MemoStep],
        retries: int,
        backoff: Backoff,
        sink: Sink,
        new_id: Callable[[], str],
        clock: Callable[[], float] = time.time,
        budget: float = 60.0,
        extra_args: tuple[Any, ...] = (),
        view: StorageView | None = None,
        known_functions: frozenset[str] = frozenset(),
        yield_after_write: bool = False,
        trace: str | None = None,
    ) -> None:
        self.view = view
        self.trace = trace  # the event's traceparent: the parent of this invocation's span
        # push mode: run at most one new step body (or one map batch) per invocation, so that
        # an endpoint that dies or times out repeats at most one step; the final return after
        # that step is still part of the invocation
        self.yield_after_write = yield_after_write
        self._wrote = False
        self.known_functions = known_functions
        self.fn = fn
        self.function_id = function_id
        self.run_id = run_id
        self.event = event
        self.memo = memo
        self.retries = retries
        self.backoff = backoff
        self.sink = sink
        self.new_id = new_id
        self.clock = clock
        self.budget = budget
        self.extra_args = extra_args
        self.is_async = inspect.iscoroutinefunction(fn)
        self.attempt = 0
        self.current_step: str | None = None
        self.logs: list[LogRecord] = []
        self.steps_run = 0
        self._used: dict[str, int] = {}
        self._visited: set[str] = set()
        self._seq = max((m.seq for m in memo.values()), default=0)
        self._started = 0.0
        self._suspend: Suspend | None = None
        self._event_dict: dict[str, Any] | None = None
        self._pending: Ack | None = None
        self._traced_run = False  # this invocation is a span (OpenTelemetry is configured)
        self._step_span: tracing.NoSpan | None = None  # the span of the step executing now, when traced
        self._first_attempt: int | None = None  # of the first step this invocation executes

    # ---- running ---------------------------------------------------------------------------

    def run(self) -> InvocationResult:
        """Run a ``def`` function (or an ``async def`` one on a private loop)."""
        if self.is_async:
            return asyncio.run(self.arun())
        span = self._run_span()
        if span is tracing.NO_SPAN:  # the usual case costs one check per invocation
            return self._run()
        with span:
            return self._traced(span, self._run())

    async def arun(self) -> InvocationResult:
        span = self._run_span()
        if span is tracing.NO_SPAN:
            return await self._arun()
        with span:
            return self._traced(span, await self._arun())

    def _run(self) -> InvocationResult:
        self._started = self.clock()
        from conveyor.executor.steps import SyncSteps

        ctx = Context(self, SyncSteps(self))
        try:
            value = self.fn(ctx, *self.extra_args)
        except BaseException as exc:
            return self._finish_error(exc)
        return self._finish_value(value)

    async def _arun(self) -> InvocationResult:
        self._started = self.clock()
        from conveyor.executor.steps import AsyncSteps

        ctx = Context(self, AsyncSteps(self))
        try:
            value = self.fn(ctx, *self.extra_args)
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            return self._finish_error(exc)
        return self._finish_value(value)

    def _run_span(self) -> tracing.NoSpan:
        span = tracing.run_span(self.function_id, self.run_id, self.event.name, self.trace)
        self._traced_run = span is not tracing.NO_SPAN
        return span

    def _traced(self, span: tracing.NoSpan, result: InvocationResult) -> InvocationResult:
        """Put the invocation's outcome on its span."""
        out = result.outcome
        span.set("conveyor.attempt", self._first_attempt or 0)
        span.set("conveyor.steps_run", result.steps_run)
        if isinstance(out, Suspended):
            span.set("conveyor.suspend_reason", out.reason)
        span.outcome(type(out).__name__.lower(), out.error if isinstance(out, Failed) else None)
        return result

    def step_span(self, sid: str, kind: StepKind) -> AbstractContextManager[tracing.NoSpan]:
        """The span of a step this invocation executes now (not replays); use it as a context.

        What the step writes (:meth:`emit`, :meth:`suspend`) sets the span's verdict."""
        if not self._traced_run:
            return tracing.NO_SPAN
        attempt = self.attempt
        if self._first_attempt is None:
            self._first_attempt = attempt
        return _StepScope(self, tracing.step_span(sid, kind.value, attempt, self.run_id))

    def trace_context(self) -> str | None:
        """The traceparent for what the executing step starts (child runs, events): its span's,
        else (nothing traced here) the run's own, so a trace crosses an untraced process."""
        span = self._step_span
        return (span.traceparent() if span is not None else None) or self.trace

    def _trace_write(self, write: StepWrite) -> None:
        span = self._step_span
        if span is not None:
            span.outcome(write.status, write.error if write.status in ("failed", "retrying") else None)

    def _result(self, outcome: Outcome, write: StepWrite | None = None) -> InvocationResult:
        return InvocationResult(outcome, write, self.logs, self.steps_run)

    def _finish_value(self, value: Any) -> InvocationResult:
        if self._suspend is not None:  # user code swallowed the signal; it still stands
            return self._result(self._suspend.suspended, self._suspend.write)
        try:
            return self._result(Completed(codec.dumps(value, what="the function's return value")))
        except SerializationError as exc:
            return self._result(Failed(error_dict(exc, None)))

    def _finish_error(self, exc: BaseException) -> InvocationResult:
        if self._suspend is not None:
            return self._result(self._suspend.suspended, self._suspend.write)
        if isinstance(exc, Suspend):
            return self._result(exc.suspended, exc.write)
        if isinstance(exc, FatalRunError):
            return self._result(Failed(exc.error))
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit) or not isinstance(
            exc, Exception
        ):
            raise exc
        return self._result(Failed(error_dict(exc, None)))

    # ---- helpers shared by the step shells ----------------------------------------------------

    @property
    def replaying(self) -> bool:
        return any(sid not in self._visited for sid in self.memo)

    def log_fields(self) -> dict[str, Any]:
        """The record attributes that say which run, step and attempt a log line is about."""
        return {"function": self.function_id, "run_id": self.run_id, "step_id": self.current_step,
                "attempt": self.attempt}

    def record_log(self, level: int, text: str) -> None:
        self.logs.append(
            LogRecord(self.current_step, self.attempt, self.clock(), logging.getLevelName(level), text)
        )

    def event_dict(self) -> dict[str, Any]:
        if self._event_dict is None:
            self._event_dict = {"id": self.event.id, "name": self.event.name, "data": self.event.data}
        return self._event_dict

    def check_open(self) -> None:
        """A step called after a suspension (user code caught the signal) suspends again."""
        if self._suspend is not None:
            raise self._suspend

    def suspend(self, suspended: Suspended, write: StepWrite | None = None) -> Suspend:
        if write is not None and self._step_span is not None:
            self._trace_write(write)
        self._suspend = Suspend(suspended, write)
        return self._suspend

    def step_id(self, requested: str) -> str:
        """The step's id in this run: a repeated id gets a counter suffix (``id:1``, ``id:2``)."""
        if not isinstance(requested, str) or not requested:
            raise FatalRunError(
                {"step_id": None, "type": "InvalidInput", "message": "a step id must be a non-empty string"}
            )
        n = self._used.get(requested, 0)
        self._used[requested] = n + 1
        return requested if n == 0 else f"{requested}:{n}"

    def lookup(self, sid: str, kind: StepKind) -> MemoStep | None:
        """The memoized step, checked against the kind the code asks for now."""
        self.check_open()
        self.current_step = sid
        memo = self.memo.get(sid)
        if memo is None:
            unvisited = [s for s in self.memo if s not in self._visited]
            if unvisited:
                raise FatalRunError(self._nondeterminism(
                    sid,
                    f"step {sid!r} is new, but memoized steps {unvisited[:5]} were not reached "
                    "first; code between steps must be deterministic",
                ))
            self.attempt = 0
            return None
        self._visited.add(sid)
        if memo.kind != kind:
            raise FatalRunError(self._nondeterminism(
                sid, f"step {sid!r} was a {memo.kind!r} step and is now called as {kind.value!r}; "
                "step ids must keep their kind across replays",
            ))
        self.attempt = memo.attempts if memo.status == "retrying" else max(0, memo.attempts - 1)
        return memo

    def _nondeterminism(self, sid: str, message: str) -> dict[str, Any]:
        return {"step_id": sid, "type": "NonDeterminismError", "message": f"non-determinism: {message}"}

    def next_seq(self, memo: MemoStep | None) -> int:
        if memo is not None:
            return memo.seq
        self._seq += 1
        return self._seq

    def replay_value(self, memo: MemoStep) -> Any:
        if memo.status == "failed":
            raise StepError.from_dict({**(memo.error or {}), "step_id": memo.id})
        return codec.loads(memo.output)

    def emit(self, write: StepWrite) -> None:
        """Checkpoint a finished step, then yield if the time budget is spent."""
        self.memo[write.id] = MemoStep(
            write.id, write.kind, write.status, write.attempts, write.output, write.error,
            write.wake_at, write.seq, write.started_at,
        )
        self._visited.add(write.id)
        self.steps_run += 1
        if self._step_span is not None:
            self._trace_write(write)
        self.current_step = None
        self._wrote = True
        ack = self.sink(write)
        if ack is not None:
            self._pending = ack

    def checkpoint(self, write: StepWrite) -> None:
        """Commit a partial write of a step that goes on (a map creating children), and wait for it."""
        self.memo[write.id] = MemoStep(
            write.id, write.kind, write.status, write.attempts, write.output, write.error,
            write.wake_at, write.seq, write.started_at, write.children_total, write.children_created,
        )
        self._visited.add(write.id)
        self._wrote = True
        if self._step_span is not None:
            self._trace_write(write)
        ack = self.sink(write)
        if ack is not None:
            self._pending = ack
        self.settle()

    def settle(self) -> None:
        """Before a step body runs, the previous checkpoint must be committed (and still ours)."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.result():
            raise LeaseLost(self.run_id)
        self._yield_if_written()

    async def asettle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            self._yield_if_written()
            return
        if isinstance(pending, concurrent.futures.Future):
            ok = await asyncio.wrap_future(pending)
        else:
            ok = await asyncio.to_thread(pending.result)
        if not ok:
            raise LeaseLost(self.run_id)
        self._yield_if_written()

    def _yield_if_written(self) -> None:
        if self.yield_after_write and self._wrote:
            raise self.suspend(Suspended(self.clock(), "yield"))

    def require_function(self, sid: str, kind: StepKind, function_id: str) -> None:
        """A step that starts runs of an unknown function fails now, for good."""
        if function_id in self.known_functions:
            return
        if self.view is not None and self.view.function_exists(function_id):
            return
        message = f"unknown function {function_id!r}: no app has registered it with this database"
        self.emit(StepWrite(sid, kind, "failed", 1, self.next_seq(None),
                            error={"step_id": sid, "type": "NotFound", "message": message},
                            started_at=self.clock(), ended_at=self.clock()))
        raise StepError(sid, "NotFound", message)

    def maybe_yield(self) -> None:
        now = self.clock()
        if now - self._started > self.budget:
            raise self.suspend(Suspended(now, "yield"))

    # ---- the ``run`` step, in two halves around the user's body --------------------------------

    def run_begin(self, sid: str) -> tuple[MemoStep | None, float]:
        memo = self.lookup(sid, StepKind.RUN)
        if memo is not None and memo.status in RESOLVED:
            return memo, 0.0
        return memo, self.clock()

    def run_succeeded(self, sid: str, memo: MemoStep | None, started: float, value: Any) -> Any:
        try:
            text, decoded = codec.roundtrip(value, what=f"the output of step {sid!r}")
        except SerializationError as exc:
            return self.run_failed(sid, memo, started, NonRetriableError(exc.message), "SerializationError")
        attempts = (memo.attempts if memo else 0) + 1
        self.emit(StepWrite(
            sid, StepKind.RUN, "completed", attempts, self.next_seq(memo), output=text,
            started_at=memo.started_at if memo and memo.started_at else started, ended_at=self.clock(),
        ))
        self.maybe_yield()
        return decoded

    def run_failed(
        self, sid: str, memo: MemoStep | None, started: float, exc: BaseException, type_name: str | None = None
    ) -> Any:
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit, our own signals
        if self._step_span is not None:
            self._step_span.exception(exc)
        attempts = (memo.attempts if memo else 0) + 1
        error = error_dict(exc, sid)
        if type_name:
            error["type"] = type_name
        delay = retry_delay(exc, attempts, self.retries, self.backoff)
        first_start = memo.started_at if memo and memo.started_at else started
        now = self.clock()
        if delay is not None:
            self.record_log(logging.WARNING, f"attempt {attempts} of step {sid!r} failed ({error['type']}: "
                            f"{error['message']}); retrying in {delay:.3g}s")
            write = StepWrite(
                sid, StepKind.RUN, "retrying", attempts, self.next_seq(memo), error=error,
                wake_at=now + delay, started_at=first_start,
            )
            raise self.suspend(Suspended(now + delay, "retry"), write)
        self.emit(StepWrite(
            sid, StepKind.RUN, "failed", attempts, self.next_seq(memo), error=error,
            started_at=first_start, ended_at=now,
        ))
        raise StepError(sid, error["type"], error["message"])


class _StepScope:
    """A traced step's span, made current for the step and known to the invocation meanwhile."""

    __slots__ = ("_inv", "_outer", "_span")

    def __init__(self, invocation: Invocation, span: tracing.NoSpan) -> None:
        self._inv = invocation
        self._span = span
        self._outer: tracing.NoSpan | None = None

    def __enter__(self) -> tracing.NoSpan:
        self._outer, self._inv._step_span = self._inv._step_span, self._span
        return self._span.__enter__()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._inv._step_span = self._outer
        self._span.__exit__(typ, exc, tb)
