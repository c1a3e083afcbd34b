"""Checks shared by the crash tests (public API only)."""

from __future__ import annotations

from typing import Any

#: The steps of the crash app's ``three-steps`` function, in order.
STEPS = ["one", "two", "three"]


def completed(app: Any, function: str) -> int:
    return len(app.list_runs(function=function, status="completed", limit=100_000))


def check_runs_committed_once(app: Any, event_ids: list[str]) -> dict[str, int]:
    """Every event has one completed run whose steps each committed once; returns
    run id -> event number."""
    run_ids = {}
    for i, event_id in enumerate(event_ids):
        runs = app.runs_for_event(event_id)
        assert len(runs) == 1, f"event {event_id} has {len(runs)} runs"
        run = app.get_run(runs[0].id)
        assert run.status == "completed", run
        assert run.output == {"n": i, "out": i + 3}, run
        assert [s.id for s in run.steps] == STEPS, f"step records of {run.id}: {run.steps}"
        assert [s.status for s in run.steps] == ["completed"] * 3
        assert [s.output for s in run.steps] == [i + 1, i + 2, i + 3]
        run_ids[run.id] = i
    return run_ids
