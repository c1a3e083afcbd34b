"""Rich renderings of runs and steps, shared by the CLI and the examples."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from conveyor import text
from conveyor.types import Progress, Run, StepRecord

STATUS_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "waiting": "yellow",
    "sleeping": "yellow",
    "retrying": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def duration(start: datetime | None, end: datetime | None) -> str:
    """``12ms``, ``3.40s``, ``2m05s``, ``1h02m``; ``-`` when it has not started or ended."""
    if start is None or end is None:
        return "-"
    return text.duration((end - start).total_seconds(), compact=True)


def timestamp(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def truncate(value: Any, width: int = 60) -> str:
    """A one-line JSON rendering of ``value``, cut to ``width`` characters."""
    if value is None:
        return ""
    line = value if isinstance(value, str) else text.json_line(value)
    return text.cut(" ".join(line.split()), width)


def error_line(error: dict[str, Any] | None) -> str:
    """``[fetch] ValueError: the file is empty``: the step it happened in, then the error."""
    return text.error_line(error, with_step=True)


def _detail(output: Any, error: dict[str, Any] | None) -> Text:
    """One line of output or error, cut with an ellipsis to the column's width."""
    if error:
        return Text(truncate(error_line(error), 120), style="red", no_wrap=True, overflow="ellipsis")
    return Text(truncate(output, 120), no_wrap=True, overflow="ellipsis")


def runs_table(runs: Sequence[Run], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("run id", no_wrap=True)
    table.add_column("function", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("result", max_width=70)
    for run in runs:
        detail = _detail(run.output, run.error)
        table.add_row(
            run.id,
            run.function_id,
            status_text(run.status),
            timestamp(run.created_at),
            duration(run.started_at, run.ended_at),
            detail,
        )
    return table


#: Width, in characters, of the timeline column of ``runs show``.
TIMELINE_WIDTH = 32


def steps_table(steps: Sequence[StepRecord], *, run: Run | None = None, now: datetime | None = None) -> Table:
    """The steps in execution order; with ``run``, a waterfall column places each step on the
    run's time axis (from its start to its end, or to ``now`` while it goes on)."""
    axis = _axis(run, steps, now) if run is not None else None
    title = "steps" if axis is None else f"steps  (timeline: {duration(axis[0], axis[1])} in all)"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    if axis is not None:
        table.add_column("timeline", no_wrap=True, min_width=TIMELINE_WIDTH)
    table.add_column("result", max_width=70)
    for number, step in enumerate(steps, 1):
        row: list[RenderableType] = [
            str(number),
            step.id,
            step.kind,
            status_text(step.status),
            str(step.attempts),
            duration(step.started_at, step.ended_at or (axis[1] if axis and step.started_at else None)),
        ]
        if axis is not None:
            row.append(timeline_bar(step, *axis))
        row.append(_detail(step.output, step.error))
        table.add_row(*row)
    return table


def _axis(run: Run, steps: Sequence[StepRecord], now: datetime | None) -> tuple[datetime, datetime] | None:
    """The time span the timeline covers: the run's start (or first step's) to its end, or now."""
    starts = [s.started_at for s in steps if s.started_at]
    start = run.started_at or min(starts, default=None)
    if start is None:
        return None
    ends = [s.ended_at for s in steps if s.ended_at]
    end = run.ended_at or (now if now is not None else datetime.now(start.tzinfo))
    end = max([end, *ends])
    return start, end


def timeline_bar(step: StepRecord, start: datetime, end: datetime, width: int = TIMELINE_WIDTH) -> Text:
    """``   ━━━━━━          ``: the step's span on the ``start``..``end`` axis, at least one
    character wide; a step still going on runs to the end of the axis, dimmed."""
    if step.started_at is None:
        return Text(" " * width)
    total = max((end - start).total_seconds(), 1e-9)
    left = (step.started_at - start).total_seconds() / total
    right = ((step.ended_at or end) - start).total_seconds() / total
    first = min(width - 1, max(0, int(left * width)))
    last = min(width, max(first + 1, round(right * width)))
    style = STATUS_STYLES.get(step.status, "")
    if step.ended_at is None:
        style += " dim"
    return Text.assemble(" " * first, ("━" * (last - first), style), " " * (width - last))


def logs_table(records: Sequence[dict[str, Any]], *, since: datetime | None = None) -> Table:
    """The lines a run wrote through ``ctx.log``: time (after ``since``, else absolute), level, step."""
    table = Table(title="log", title_justify="left")
    table.add_column("time", justify="right", no_wrap=True, style="dim")
    table.add_column("level", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("message")
    for r in records:
        ts = r.get("ts")
        if isinstance(ts, int | float) and since is not None:
            when = f"+{seconds_text(ts - since.timestamp())}"
        elif isinstance(ts, int | float):
            when = timestamp(datetime.fromtimestamp(ts).astimezone())
        else:
            when = "-"
        level = str(r.get("level", ""))
        table.add_row(when, Text(level, style=LEVEL_STYLES.get(level, "")), r.get("step_id") or "-",
                      str(r.get("attempt", "")), Text(str(r.get("message", ""))))
    return table


LEVEL_STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def run_header(run: Run) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("run", run.id)
    grid.add_row("function", run.function_id)
    grid.add_row("status", status_text(run.status))
    grid.add_row("event", run.event_id)
    if run.parent_id:
        grid.add_row("parent", run.parent_id)
    grid.add_row("pool", run.pool)
    grid.add_row("created", timestamp(run.created_at))
    grid.add_row("duration", duration(run.started_at, run.ended_at))
    if run.progress is not None and run.progress.total:
        p = run.progress
        grid.add_row(
            "children",
            f"{p.ended}/{p.total} ended ({p.completed} completed, {p.failed} failed, "
            f"{p.cancelled} cancelled, {p.queued + p.running + p.waiting} pending)",
        )
    if run.error:
        grid.add_row("error", Text(error_line(run.error), style="red"))
    elif run.output is not None:
        grid.add_row("output", Text(truncate(run.output, 200)))
    return grid


def run_detail(run: Run, logs: Sequence[dict[str, Any]] = (), *, now: datetime | None = None) -> RenderableType:
    """The run's header, the table of its steps on a timeline, and the lines it logged."""
    parts: list[RenderableType] = [run_header(run)]
    if run.progress is not None and run.progress.total:
        parts.append(progress_bar(run.progress))
    parts.append(Text(""))
    if run.steps:
        parts.append(steps_table(run.steps, run=run, now=now))
    else:
        parts.append(Text("no steps yet", style="dim"))
    if logs:
        parts += [Text(""), logs_table(logs, since=run.started_at)]
    return Group(*parts)


# --- progress of a run's children (``conveyor runs watch`` and the examples) ---------------

#: The order in which the counts of a parent's children are shown.
PROGRESS_COUNTS = ("queued", "running", "waiting", "completed", "failed", "cancelled")


def seconds_text(seconds: float | None) -> str:
    """An estimate or an offset: ``0.4s``, ``12s`` (no more precision than it has), then as a
    duration: ``2m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return text.duration(seconds, compact=True)


def rate_text(rate: float) -> str:
    """Children ended per second: ``0.50/s``, ``12.3/s``, ``4,617/s``."""
    if rate < 1:
        return f"{rate:.2f}/s"
    if rate < 100:
        return f"{rate:.1f}/s"
    return f"{rate:,.0f}/s"


def percent(progress: Progress) -> float:
    return text.percent(progress.ended, progress.total)


def progress_counts(progress: Progress) -> Text:
    """``queued 630  running 3  waiting 0  completed 1,367  failed 0  cancelled 0``, coloured."""
    parts: list[str | tuple[str, str]] = []
    for name in PROGRESS_COUNTS:
        count = int(getattr(progress, name))
        if parts:
            parts.append("  ")
        style = STATUS_STYLES[name] if count else "dim"
        parts.append((f"{name} {count:,}", style))
    return Text.assemble(*parts)


def progress_bar(progress: Progress) -> Table:
    """One line: the bar of ended/total children, the fraction, the rate and the ETA."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(ratio=1, min_width=10)
    for _ in range(4):
        grid.add_column(justify="right", no_wrap=True)
    style = "red" if progress.failed or progress.cancelled else "green"
    bar = ProgressBar(total=float(progress.total), completed=float(progress.ended), complete_style="yellow",
                      finished_style=style)
    grid.add_row(
        "children",
        bar,
        f"{progress.ended:,}/{progress.total:,}",
        f"{percent(progress):3.0f}%",
        rate_text(progress.rate),
        f"ETA {seconds_text(0.0 if progress.done else progress.eta)}",
    )
    return grid


def progress_line(progress: Progress) -> str:
    """The plain-text twin of :func:`progress_bar` and :func:`progress_counts`, for logs."""
    counts = " ".join(f"{name}={getattr(progress, name)}" for name in PROGRESS_COUNTS)
    eta = 0.0 if progress.done else progress.eta
    return (
        f"children {progress.ended}/{progress.total} ({percent(progress):.0f}%) {counts} "
        f"rate={rate_text(progress.rate)} eta={seconds_text(eta)}"
    )


def run_status_line(run: Run) -> Text:
    """``score-all <id>: waiting  steps done: 1  at: score (waiting)``."""
    parts: list[str | tuple[str, str] | Text] = [f"{run.function_id} {run.id}: ", status_text(run.status)]
    parts.append(f"  steps done: {sum(1 for s in run.steps if s.status == 'completed')}")
    current = next((s for s in reversed(run.steps) if s.status != "completed"), None)
    if current is not None and not run.done:
        attempt = f", attempt {current.attempts}" if current.attempts > 1 else ""
        parts.append(f"  at: {current.id} ({current.status}{attempt})")
    return Text.assemble(*parts)


def watch_view(run: Run) -> RenderableType:
    """What ``runs watch`` shows on a terminal: the run's status, then its children's bar and counts."""
    items: list[RenderableType] = [run_status_line(run)]
    if run.progress is not None and run.progress.total:
        items += [progress_bar(run.progress), progress_counts(run.progress)]
    elif not run.done:
        items.append(Text("no child runs (yet)", style="dim"))
    return Group(*items)


def watch_line(run: Run) -> str:
    """What ``runs watch`` prints when not on a terminal: one plain line per update."""
    line = run_status_line(run).plain
    if run.progress is not None and run.progress.total:
        line += "  " + progress_line(run.progress)
    return line
