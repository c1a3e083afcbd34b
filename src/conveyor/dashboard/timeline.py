"""A run's waterfall: where each step's bar starts and how wide it is, and the children's
progress bar. Pure geometry, in percent of the run's time span, so the page draws it
with SVG attributes (no inline styles: the dashboard's CSP forbids them)."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.dashboard.format import duration, ts_of
from conveyor.types import Progress, Run, StepRecord

MIN_WIDTH = 0.6  # percent: an instant step is still a visible tick
OPEN_STATUSES = frozenset({"running", "retrying", "sleeping", "waiting"})
#: The statuses of a step that has a time to wake at: asleep, to retry, waiting (until a timeout).
WAKING_STATUSES = frozenset({"retrying", "sleeping", "waiting"})
#: The order of a progress bar's segments: ended first, then what is still in flight.
PROGRESS_ORDER = ("completed", "failed", "cancelled", "running", "waiting", "queued")


@dataclass(frozen=True, slots=True)
class Bar:
    step: StepRecord
    left: float  # percent of the span from the run's creation
    width: float  # percent; 0 for a step that has not started
    started: float | None
    ended: float | None
    seconds: float | None  # how long it took (so far, for an open step)
    open: bool  # still going: sleeping, waiting, retrying
    wake_at: float | None = None  # a sleeping or retrying step's next wake-up

    @property
    def label(self) -> str:
        return duration(self.seconds)


@dataclass(frozen=True, slots=True)
class Waterfall:
    bars: list[Bar]
    start: float | None
    end: float | None
    ticks: list[str]  # labels of the time axis at 0, 25, 50, 75 and 100 % of the span

    @property
    def span(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


def waterfall(run: Run, now: float) -> Waterfall:
    """Bars for ``run.steps``, on one axis from the run's creation to its end (or ``now``)."""
    times = [(ts_of(s.started_at), ts_of(s.ended_at)) for s in run.steps]
    starts = [t for t in (ts_of(run.created_at), ts_of(run.started_at), *(a for a, _ in times)) if t is not None]
    start = min(starts) if starts else None
    if start is None:
        return Waterfall([], None, None, [])
    ends = [t for t in (ts_of(run.ended_at), *(b for _, b in times), *(a for a, _ in times)) if t is not None]
    end = max(ends, default=start) if run.done else max(now, *ends)
    span = max(end - start, 1e-3)
    bars = []
    for step, (began, ended) in zip(run.steps, times, strict=True):
        is_open = step.status in OPEN_STATUSES and ended is None
        wake_at = ts_of(step.wake_at) if step.status in WAKING_STATUSES else None
        if began is None:
            bars.append(Bar(step, 0.0, 0.0, None, ended, None, is_open, wake_at))
            continue
        until = ended if ended is not None else (end if is_open else began)
        left = min(100.0 - MIN_WIDTH, 100.0 * (began - start) / span)
        width = max(MIN_WIDTH, min(100.0 - left, 100.0 * (until - began) / span))
        bars.append(Bar(step, round(left, 3), round(width, 3), began, ended, until - began, is_open, wake_at))
    ticks = ["0" if i == 0 else duration(span * i / 4) for i in range(5)]
    return Waterfall(bars, start, end, ticks)


@dataclass(frozen=True, slots=True)
class Segment:
    status: str
    count: int
    left: float
    width: float


def progress_segments(progress: Progress) -> list[Segment]:
    """The progress bar of a parent's children, one segment per status that has any."""
    total = max(progress.total, 1)
    out = []
    left = 0.0
    for status in PROGRESS_ORDER:
        n = int(getattr(progress, status))
        if n <= 0:
            continue
        width = 100.0 * n / total
        out.append(Segment(status, n, round(left, 3), round(width, 3)))
        left += width
    return out
