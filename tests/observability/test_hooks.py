"""The event catalog: subscribing, isolation of a failing handler, and what the engine emits
for real runs (every backend) — after the commit, and only for results whose fence held."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

import conveyor
from conveyor.observability.hooks import (
    CATALOG,
    EventsAccepted,
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
from conveyor.records import Completed
from conveyor.storage.base import JobResult


def test_handlers_subscribe_by_name_or_class_and_unsubscribe() -> None:
    hooks = Hooks()
    seen: list[tuple[str, HookEvent]] = []
    assert not hooks.active and not hooks.wants(RunStarted)
    undo_a = hooks.subscribe("run.started", lambda e: seen.append(("a", e)))
    undo_b = hooks.subscribe(RunStarted, lambda e: seen.append(("b", e)))
    assert hooks.active and hooks.wants(RunStarted) and not hooks.wants(RunFailed)
    event = RunStarted("f", "r1", "default")
    hooks.emit(event)
    hooks.emit(RunCompleted("f", "r1"))  # nobody listens
    assert seen == [("a", event), ("b", event)]
    undo_a()
    hooks.emit(event)
    assert seen[-1] == ("b", event) and len(seen) == 3
    undo_b()
    assert not hooks.active


def test_batch_handlers_get_the_events_of_one_emission_together() -> None:
    hooks = Hooks()
    batches: list[list[str]] = []
    singles: list[str] = []
    hooks.subscribe_batch(RunCompleted, lambda events: batches.append([e.run_id for e in events]))
    hooks.subscribe("run.completed", lambda e: singles.append(e.run_id))
    hooks.emit_many([RunCompleted("f", "r1"), RunCompleted("g", "r2")])
    hooks.emit(RunCompleted("f", "r3"))
    hooks.emit_many([])
    assert batches == [["r1", "r2"], ["r3"]]
    assert singles == ["r1", "r2", "r3"]


def test_the_engine_emits_a_commit_as_one_batch_per_kind(app: Any) -> None:
    @app.function(on="go")
    def quick(ctx: conveyor.Context) -> None:
        ctx.step.run("only", lambda: None)

    batches: list[int] = []
    app.hooks.subscribe_batch(RunCompleted, lambda events: batches.append(len(events)))
    app.send_many([conveyor.Event(name="go") for _ in range(5)])
    app.drain(timeout=30)  # drain commits the outcomes of what it claimed together
    assert sum(batches) == 5 and max(batches) > 1


def test_the_catalog_names_its_events() -> None:
    assert set(CATALOG) == {"run.started", "run.completed", "run.failed", "run.suspended", "step.completed",
                            "step.failed", "step.retrying", "event.accepted", "event.rejected", "delivery.failed"}
    with pytest.raises(ValueError, match=r"unknown event 'run\.exploded'"):
        Hooks().subscribe("run.exploded", print)
    with pytest.raises(TypeError):
        Hooks().subscribe(HookEvent, print)


def test_a_failing_handler_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    seen: list[HookEvent] = []

    def broken(event: HookEvent) -> None:
        raise RuntimeError("handler bug")

    hooks.subscribe(RunStarted, broken)
    hooks.subscribe(RunStarted, seen.append)
    with caplog.at_level(logging.WARNING, "conveyor.observability.hooks"):
        hooks.emit(RunStarted("f", "r1", "default"))
        hooks.emit(RunStarted("f", "r2", "default"))
    assert [e.run_id for e in seen] == ["r1", "r2"]  # type: ignore[attr-defined]
    assert [bool(r.exc_info) for r in caplog.records] == [True, False]  # the traceback once


def record_everything(app: Any) -> list[HookEvent]:
    seen: list[HookEvent] = []
    for cls in CATALOG.values():
        app.hooks.subscribe(cls, seen.append)
    return seen


def test_the_engine_reports_runs_and_steps_as_they_commit(app: Any) -> None:
    @app.function(on="go", retries=1)
    def work(ctx: conveyor.Context) -> int:
        ctx.step.run("first", lambda: 1)

        def flaky() -> int:
            if ctx.attempt == 0:
                raise ValueError("once")
            return 2

        return ctx.step.run("second", flaky)  # type: ignore[no-any-return]

    @app.function(on="go", retries=0)
    def broken(ctx: conveyor.Context) -> None:
        ctx.step.run("boom", lambda: 1 / 0)

    seen = record_everything(app)
    app.send_many([conveyor.Event(name="go"), conveyor.Event(name="go")])
    app.drain(timeout=30)
    runs = {r.function_id: r.id for r in app.list_runs()}
    assert len(runs) == 2 and Counter(r.function_id for r in app.list_runs()) == {"work": 2, "broken": 2}

    assert [e.count for e in seen if isinstance(e, EventsAccepted)] == [2]
    started = [e for e in seen if isinstance(e, RunStarted)]
    assert sorted(e.function for e in started) == ["broken", "broken", "work", "work"]
    assert len({e.run_id for e in started}) == 4  # once per run, though "work" ran twice
    assert Counter((e.function, e.step_id) for e in seen if isinstance(e, StepCompleted)) == {
        ("work", "first"): 2, ("work", "second"): 2}
    retries = [e for e in seen if isinstance(e, StepRetrying)]
    assert [(e.function, e.step_id, e.attempt, e.error_type) for e in retries] == [
        ("work", "second", 0, "ValueError")] * 2
    assert all(e.retry_at is not None for e in retries)
    assert [(e.reason, e.function) for e in seen if isinstance(e, RunSuspended)] == [("retry", "work")] * 2
    assert sum(isinstance(e, RunCompleted) and e.function == "work" for e in seen) == 2
    failed_steps = [e for e in seen if isinstance(e, StepFailed)]
    assert [(e.step_id, e.attempts, e.error_type) for e in failed_steps] == [("boom", 1, "ZeroDivisionError")] * 2
    assert all(e.duration is not None and e.duration >= 0 for e in failed_steps)
    failures = [e for e in seen if isinstance(e, RunFailed)]
    assert [(e.function, e.step_id, e.error_type) for e in failures] == [("broken", "boom", "ZeroDivisionError")] * 2
    assert all("division by zero" in e.message for e in failures)
    done = [e for e in seen if isinstance(e, StepCompleted)]
    assert all(e.kind == "run" and e.attempts in (1, 2) and e.duration is not None for e in done)


def test_a_result_fenced_out_reports_nothing(app: Any) -> None:
    @app.function(on="go")
    def slow(ctx: conveyor.Context) -> None: ...

    app.send("go")
    engine = app._engine()
    seen = record_everything(app)
    [job] = engine.claim("w", ["default"], 10)
    engine.cancel(job.run_id)  # the lease is gone: what the worker reports is refused
    assert engine.commit([JobResult(job.run_id, job.token, job.function_id, outcome=Completed("1"))]) == [False]
    assert [type(e) for e in seen] == [RunStarted]
    assert app.get_run(job.run_id).status == "cancelled"
