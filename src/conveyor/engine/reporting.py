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
    if hooks.wants(RunStarted):
        hooks.emit_many([RunStarted(job.function_id, job.run_id, job.pool) for job in jobs if job.first])


def report_commit(hooks: Hooks, results: Sequence[JobResult], accepted: Sequence[bool]) -> None:
    """The catalog's run and step events of the accepted results, and the log lines of failures."""
    if hooks.active:
        _emit(hooks, results, accepted)
    if log.isEnabledFor(logging.WARNING):
        for res, ok in zip(results, accepted, strict=True):
            if ok:
                _log_failures(res)


def _emit(hooks: Hooks, results: Sequence[JobResult], accepted: Sequence[bool]) -> None:
    """Every event of the batch, built only if someone listens, emitted together by kind."""
    wants = hooks.wants
    step_done: list[HookEvent] | None = [] if wants(StepCompleted) else None
    step_failed: list[HookEvent] | None = [] if wants(StepFailed) else None
    retrying: list[HookEvent] | None = [] if wants(StepRetrying) else None
    completed: list[HookEvent] | None = [] if wants(RunCompleted) else None
    failed: list[HookEvent] | None = [] if wants(RunFailed) else None
    suspended: list[HookEvent] | None = [] if wants(RunSuspended) else None
    for res, ok in zip(results, accepted, strict=True):
        if not ok:
            continue
        fid, run_id = res.function_id, res.run_id
        for w in res.steps:
            if w.status == "completed":
                if step_done is not None:
                    step_done.append(StepCompleted(fid, run_id, w.id, w.kind, w.attempts,
                                                   _duration(w.started_at, w.ended_at)))
            elif w.status == "failed":
                if step_failed is not None:
                    step_failed.append(StepFailed(fid, run_id, w.id, w.kind, w.attempts,
                                                  _duration(w.started_at, w.ended_at), _error_type(w.error)))
            elif w.status == "retrying" and retrying is not None:
                retrying.append(StepRetrying(fid, run_id, w.id, max(0, w.attempts - 1), _error_type(w.error),
                                             w.wake_at))
        out = res.outcome
        if isinstance(out, Completed):
            if completed is not None:
                completed.append(RunCompleted(fid, run_id))
        elif isinstance(out, Failed):
            if failed is not None:
                error = out.error
                failed.append(RunFailed(fid, run_id, error.get("step_id"), _error_type(error),
                                        str(error.get("message", ""))))
        elif isinstance(out, Suspended) and suspended is not None:
            suspended.append(RunSuspended(fid, run_id, out.reason, out.run_at))
    for events in (step_done, step_failed, retrying, completed, failed, suspended):
        if events:
            hooks.emit_many(events)


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
