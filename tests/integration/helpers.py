"""Small helpers shared by the integration tests (public API only)."""

from __future__ import annotations

import threading
from typing import Any


def only_run(app: Any, event_id: str) -> Any:
    """The single run an event started (fetched whole, with its steps); fails if it
    started none or several."""
    runs = app.runs_for_event(event_id)
    assert len(runs) == 1, f"event {event_id} started {len(runs)} runs: {runs!r}"
    return app.get_run(runs[0].id)


def step_ids(run: Any) -> list[str]:
    return [s.id for s in run.steps]


def step(run: Any, step_id: str) -> Any:
    """The step record ``step_id`` of ``run``; fails if absent or repeated."""
    found = [s for s in run.steps if s.id == step_id]
    assert len(found) == 1, f"step {step_id!r} recorded {len(found)} times in {run.steps!r}"
    return found[0]


def error_text(run: Any) -> str:
    """The run's error as one lowercase string (type and message), for matching."""
    err = run.error or {}
    return " ".join(str(v) for v in err.values()).lower()


class Overlap:
    """Counts bodies running at once (``with overlap:``) and the maximum seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.entered = 0

    def __enter__(self) -> Overlap:
        with self._lock:
            self.active += 1
            self.entered += 1
            self.max_active = max(self.max_active, self.active)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1
