"""The waterfall's geometry and the progress bar's segments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.dashboard.timeline import MIN_WIDTH, progress_segments, waterfall
from conveyor.types import Progress, Run, StepRecord

T0 = 1_700_000_000.0


def at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(T0 + seconds, UTC)


def step(sid: str, start: float | None, end: float | None, status: str = "completed", kind: str = "run",
         wake: float | None = None) -> StepRecord:
    return StepRecord(sid, kind, status, 1, None, None, at(start), at(end), at(wake))


def test_bars_sit_on_one_axis_from_the_runs_creation() -> None:
    run = Run("r", "f", "e", "completed", steps=[step("a", 1, 2), step("nap", 2, 9, kind="sleep"), step("b", 9, 9)],
              created_at=at(0), started_at=at(1), ended_at=at(10))
    wf = waterfall(run, now=T0 + 100)
    assert wf.span == pytest.approx(10)
    a, nap, b = wf.bars
    assert (a.left, a.width) == (pytest.approx(10), pytest.approx(10))
    assert (nap.left, nap.width) == (pytest.approx(20), pytest.approx(70))
    assert b.left == pytest.approx(90) and b.width == MIN_WIDTH  # an instant step is still visible
    assert wf.ticks == ["0", "2.50 s", "5.00 s", "7.50 s", "10.0 s"]


def test_an_open_step_runs_to_now_and_a_pending_one_has_no_bar() -> None:
    run = Run("r", "f", "e", "waiting", steps=[step("a", 0, 1),
                                              step("nap", 1, None, status="sleeping", kind="sleep", wake=60),
                                              step("later", None, None, status="waiting")],
              created_at=at(0), started_at=at(0))
    wf = waterfall(run, now=T0 + 4)
    _, nap, later = wf.bars
    assert nap.open and nap.width == pytest.approx(75) and nap.seconds == pytest.approx(3) and nap.wake_at == T0 + 60
    assert later.started is None and later.width == 0


def test_only_a_step_that_still_sleeps_retries_or_waits_has_a_wake_up() -> None:
    run = Run("r", "f", "e", "waiting", steps=[step("slept", 0, 1, kind="sleep", wake=1),
                                              step("flaky", 1, None, status="retrying", wake=5)],
              created_at=at(0), started_at=at(0))
    slept, flaky = waterfall(run, now=T0 + 2).bars
    assert slept.wake_at is None and flaky.wake_at == T0 + 5


def test_a_run_without_times_has_an_empty_waterfall() -> None:
    assert waterfall(Run("r", "f", "e", "queued"), now=T0).bars == []


def test_progress_segments_in_order_and_proportion() -> None:
    segs = progress_segments(Progress(total=10, completed=5, failed=1, running=2, queued=2))
    assert [(s.status, s.count) for s in segs] == [("completed", 5), ("failed", 1), ("running", 2), ("queued", 2)]
    assert [s.left for s in segs] == [0, 50, 60, 80] and sum(s.width for s in segs) == pytest.approx(100)
    assert progress_segments(Progress()) == []
