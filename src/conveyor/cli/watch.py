"""Follow a run until it ends: a live progress bar on a terminal, plain status lines elsewhere.

Used by ``conveyor runs watch`` and by the examples (``examples/credit_scores.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live

from conveyor.cli import render
from conveyor.types import Run

GetRun = Callable[[str], Run]

#: Without a terminal, a line is printed when the run's status changes, or when its
#: counts changed and this many seconds passed since the last line (a log stays short).
PLAIN_EVERY = 1.0


def watch(
    get_run: GetRun,
    run_id: str,
    console: Console,
    *,
    interval: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Run:
    """Poll ``get_run(run_id)`` every ``interval`` seconds until the run ends; return the final run."""
    run = get_run(run_id)
    if console.is_terminal:
        with Live(render.watch_view(run), console=console, auto_refresh=False) as live:
            while not run.done:
                sleep(interval)
                run = get_run(run_id)
                live.update(render.watch_view(run), refresh=True)
        return run
    last_key: tuple[object, ...] | None = None
    last_at = float("-inf")
    while True:
        key = _plain_key(run)
        changed_status = last_key is None or key[0] != last_key[0]
        if run.done or changed_status or (key != last_key and clock() - last_at >= PLAIN_EVERY):
            console.print(render.watch_line(run), soft_wrap=True, markup=False, highlight=False)
            last_key, last_at = key, clock()
        if run.done:
            return run
        sleep(interval)
        run = get_run(run_id)


def _plain_key(run: Run) -> tuple[object, ...]:
    """What makes a new plain line worth printing: the status, the step, the counts (not the rate)."""
    current = next((s.id for s in reversed(run.steps) if s.status != "completed"), None)
    p = run.progress
    counts = () if p is None else tuple(getattr(p, name) for name in render.PROGRESS_COUNTS)
    return (run.status, current, *counts)
