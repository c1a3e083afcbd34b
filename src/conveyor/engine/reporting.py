"""What the engine tells the event catalog and the log about the work it claims and commits.

Everything here runs after storage gave its verdict: a claim is reported once leased,
and a result only if its fence held, so nothing is counted for a worker that lost its
lease. The catalog's events are built only for the names someone subscribed to; the
log lines (a failed attempt, a step or run that failed for good) are written whatever
the subscribers, with ``run_id``, ``step_id`` and ``attempt`` as record attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.observability.hooks import (
    HookEvent,
    Hooks,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunSuspended,
    StepCompleted,
    StepFailed,
    StepRetrying,
)
from conveyor.records import Completed, Failed, Suspended
from conveyor.storage.base import ClaimedJob, JobResult

log = logging.getLogger("conveyor.engine")


def report_claims(hooks: Hooks, jobs: Sequence[ClaimedJob]) -> None:
    """``run.started`` for the runs claimed for the first time."""
    handlers = hooks.handlers(RunStarted)
    if not handlers:
        return
    for job in jobs:
        if job.first:
            event = RunStarted(job.function_id, job.run_id, job.pool)
            for handler in handlers:
                hooks.call(handler, event)


def report_commit(hooks: Hooks, results: Sequence[JobResult], accepted: Sequence[bool]) -> None:
    """The catalog's run and step events of the accepted results, and the log lines of failures."""
    if hooks.active:
        _emit(hooks, results, accepted)
    if log.isEnabledFor(logging.WARNING):
        for res, ok in zip(results, accepted, strict=True):
            if ok:
                _log_failures(res)


def _emit(hooks: Hooks, results: Sequence[JobResult], accepted: Sequence[bool]) -> None:
    on_step_done, on_step_failed, on_retry = (
        hooks.handlers(StepCompleted), hooks.handlers(StepFailed), hooks.handlers(StepRetrying))
    on_completed, on_failed, on_suspended = (
        hooks.handlers(RunCompleted), hooks.handlers(RunFailed), hooks.handlers(RunSuspended))
    call = hooks.call
    for res, ok in zip(results, accepted, strict=True):
        if not ok:
            continue
        fid, run_id = res.function_id, res.run_id
        for w in res.steps:
            if w.status == "completed" and on_step_done:
                done = StepCompleted(fid, run_id, w.id, w.kind, w.attempts, _duration(w.started_at, w.ended_at))
                for handler in on_step_done:
                    call(handler, done)
            elif w.status == "failed" and on_step_failed:
                failed = StepFailed(fid, run_id, w.id, w.kind, w.attempts, _duration(w.started_at, w.ended_at),
                                    _error_type(w.error))
                for handler in on_step_failed:
                    call(handler, failed)
            elif w.status == "retrying" and on_retry:
                retry = StepRetrying(fid, run_id, w.id, max(0, w.attempts - 1), _error_type(w.error), w.wake_at)
                for handler in on_retry:
                    call(handler, retry)
        out = res.outcome
        event: HookEvent | None = None
        if isinstance(out, Completed):
            if on_completed:
                event = RunCompleted(fid, run_id)
        elif isinstance(out, Failed):
            if on_failed:
                error = out.error
                event = RunFailed(fid, run_id, error.get("step_id"), _error_type(error), str(error.get("message", "")))
        elif isinstance(out, Suspended) and on_suspended:
            event = RunSuspended(fid, run_id, out.reason, out.run_at)
        if event is not None:
            for handler in hooks.handlers(type(event)):
                call(handler, event)


def _log_failures(res: JobResult) -> None:
    for w in res.steps:
        if w.status not in ("retrying", "failed"):
            continue
        error = w.error or {}
        fields = {"function": res.function_id, "run_id": res.run_id, "step_id": w.id,
                  "attempt": max(0, w.attempts - 1)}
        if w.status == "retrying":
            log.warning("run %s (%s): attempt %d of step %r failed (%s: %s); it will be retried",
                        res.run_id, res.function_id, w.attempts, w.id, _error_type(error), error.get("message"),
                        extra=fields)
        else:
            log.warning("run %s (%s): step %r failed for good after %d attempt(s) (%s: %s)",
                        res.run_id, res.function_id, w.id, w.attempts, _error_type(error), error.get("message"),
                        extra=fields)
    if isinstance(res.outcome, Failed):
        error = res.outcome.error
        log.error("run %s (%s) failed: %s: %s; it is a dead letter until redriven",
                  res.run_id, res.function_id, _error_type(error), error.get("message"),
                  extra={"function": res.function_id, "run_id": res.run_id, "step_id": error.get("step_id")})


def _duration(started: float | None, ended: float | None) -> float | None:
    return None if started is None or ended is None else ended - started


def _error_type(error: dict[str, object] | None) -> str:
    return str((error or {}).get("type") or "Error")
