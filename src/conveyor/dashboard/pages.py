"""What each page shows, read from the engine: blocking calls, made in a worker thread.

Every read is an index lookup or a short index range, a fixed number per page (a page
of events reads the runs of all its events in one query): lists are pages of keyset
pagination (one row more than shown tells whether there is an older page), and the
only counts are the per-function window counts (two index range scans, cached for
:data:`STATS_TTL` seconds in the process) and each pool's due jobs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import quote

from conveyor import text
from conveyor.dashboard import params
from conveyor.dashboard.format import MAX_PREVIEW_CHARS
from conveyor.dashboard.params import PAGE_SIZE, RunQuery
from conveyor.dashboard.timeline import progress_segments, waterfall
from conveyor.engine.engine import Engine
from conveyor.errors import NotFound
from conveyor.executor import codec
from conveyor.storage.base import EventCursor, EventRow, FunctionStats, RunFilter, RunRow
from conveyor.types import Run

STATS_TTL = 10.0
#: Windows of the functions page, in seconds: the last hour and the last day.
STATS_WINDOWS = {"hour": 3600.0, "day": 86400.0}
MAX_LOG_LINES = 1000  # a run's log lines shown (the first ones)
MAX_STEPS_SHOWN = 1000  # a run's timeline; more is a loop gone wrong, and the page says so
FAILED_CHILDREN_SHOWN = 12
RUNS_PER_EVENT = 10

T = TypeVar("T")


class TtlCache:
    """Values recomputed at most once per ``ttl`` seconds per key, in this process. A lock per
    cache keeps concurrent page loads from computing the same value at once."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and self._clock() - hit[0] < self.ttl:
                value: T = hit[1]
                return value
            value = compute()
            self._values[key] = (self._clock(), value)
            return value


@dataclass(frozen=True, slots=True)
class RunItem:
    """A run in a list: its row, with the error parsed (dead letters show it)."""

    row: RunRow
    error: dict[str, Any] | None = None

    def seconds(self, now: float) -> float | None:
        """How long it ran, or has run so far at ``now`` (the database's clock, as its times are)."""
        r = self.row
        if r.started_at is None:
            return None
        return (r.ended_at if r.ended_at is not None else now) - r.started_at


def _item(row: RunRow) -> RunItem:
    error = None
    if row.error:
        try:
            loaded = json.loads(row.error)
        except ValueError:
            loaded = {"type": "Error", "message": row.error}
        error = loaded if isinstance(loaded, dict) else {"type": "Error", "message": str(loaded)}
    return RunItem(row, error)


@dataclass
class Page:
    """One page of a keyset-paginated list, and the cursor of the next (older) one."""

    items: list[Any]
    next_cursor: str | None = None


class Pages:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.storage = engine.storage
        self._stats = TtlCache(STATS_TTL)

    def now(self) -> float:
        return self.storage.now()

    # ---- functions --------------------------------------------------------------------------------

    def stats(self, window: float) -> dict[str, FunctionStats]:
        return self._stats.get(window, lambda: self.engine.function_stats(self.storage.now() - window))

    def functions(self) -> dict[str, Any]:
        rows = self.storage.functions_list()
        stats = {name: self.stats(seconds) for name, seconds in STATS_WINDOWS.items()}
        empty = FunctionStats()
        out = []
        for row in rows:
            fid = row.spec.id
            out.append({"spec": row.spec, "updated_at": row.updated_at,
                        **{name: s.get(fid, empty) for name, s in stats.items()}})
        totals = {name: FunctionStats(sum(s.runs for s in st.values()), sum(s.failed for s in st.values()))
                  for name, st in stats.items()}
        return {"functions": out, "totals": totals, "stats_ttl": self._stats.ttl}

    # ---- runs -------------------------------------------------------------------------------------

    def runs(self, query: RunQuery, now: float) -> Page:
        since, until = params.time_range(query, now)
        flt = RunFilter(function=query.function, status=query.status, event_id=query.event,
                        parent_id=query.parent, before=query.cursor, limit=PAGE_SIZE + 1,
                        since=since, until=until, top_level=query.top_level)
        rows = self.storage.runs_list(flt)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page([_item(r) for r in rows], rows[-1].id if more else None)

    def function_ids(self) -> list[str]:
        return [row.spec.id for row in self.storage.functions_list()]

    def run(self, run_id: str, now: float) -> dict[str, Any]:
        run = self.engine.get_run(run_id)  # NotFound: a 404 page
        steps_cut = len(run.steps) > MAX_STEPS_SHOWN
        shown = run if not steps_cut else _with_steps(run, MAX_STEPS_SHOWN)
        event = self.storage.event_get(run.event_id)
        failed_children: list[RunItem] = []
        if run.progress is not None and (run.progress.failed or run.progress.cancelled):
            flt = RunFilter(parent_id=run_id, status="failed", limit=FAILED_CHILDREN_SHOWN)
            failed_children = [_item(r) for r in self.storage.runs_list(flt)]
        return {
            "run": run,
            "timeline": waterfall(shown, now),
            "steps_cut": steps_cut,
            "logs": self.storage.logs_list(run_id, MAX_LOG_LINES),
            "max_log_lines": MAX_LOG_LINES,
            "event": None if event is None else _event_view(event),
            "segments": progress_segments(run.progress) if run.progress else [],
            "percent": text.percent(run.progress.ended, run.progress.total) if run.progress else 0.0,
            "failed_children": failed_children,
        }

    # ---- events -----------------------------------------------------------------------------------

    def events(self, name: str | None, before: EventCursor | None, *, internal: bool) -> Page:
        rows = self.storage.events_list(name, before, PAGE_SIZE + 1, internal=internal)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        runs = self.storage.runs_of_events([row.id for row in rows], RUNS_PER_EVENT)  # one query for the page
        items = [{"event": _event_view(row, parse=False), "runs": [_item(r) for r in runs[row.id]]} for row in rows]
        return Page(items, str(EventCursor(rows[-1].ts, rows[-1].id)) if more else None)

    def event(self, event_id: str) -> dict[str, Any]:
        row = self.storage.event_get(event_id)
        if row is None:
            raise NotFound(f"no event with id {event_id!r}")
        runs = self.storage.runs_list(RunFilter(event_id=event_id, limit=PAGE_SIZE))
        return {"event": _event_view(row), "runs": [_item(r) for r in runs]}

    # ---- dead letters -----------------------------------------------------------------------------

    def dead_letters(self, function: str | None, cursor: str | None) -> Page:
        flt = RunFilter(function=function, status="failed", before=cursor, limit=PAGE_SIZE + 1)
        rows = self.storage.runs_list(flt)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return Page([_item(r) for r in rows], rows[-1].id if more else None)

    # ---- pools ------------------------------------------------------------------------------------

    def pools(self, now: float) -> list[dict[str, Any]]:
        functions = self.storage.functions_list()
        backlog = {b.pool: b for b in self.storage.pools_backlog(now)}
        workers = self.engine.workers()
        endpoints = self.storage.endpoints_list()
        names = {f.spec.pool for f in functions} | set(backlog)
        names |= {p for w in workers for p in w.pools} | {e.pool for e in endpoints}
        out = []
        for name in sorted(names):
            b = backlog.get(name)
            serving = [w for w in workers if name in w.pools]
            pushing = [e for e in endpoints if e.pool == name]
            out.append({
                "name": name,
                "due": b.due if b else 0,
                "oldest_age": (now - b.oldest_due_at) if b and b.oldest_due_at is not None else None,
                "functions": sorted(f.spec.id for f in functions if f.spec.pool == name),
                "workers": serving,
                "endpoints": pushing,
                "capacity": sum(w.concurrency for w in serving) + sum(e.concurrency for e in pushing),
            })
        return out

    # ---- search -----------------------------------------------------------------------------------

    def find(self, ident: str) -> str | None:
        """The page of the run or event with this id, if any (runs first)."""
        if self.storage.run_get(ident) is not None:
            return "/runs/" + quote(ident, safe="")
        if self.storage.event_get(ident) is not None:
            return "/events/" + quote(ident, safe="")
        return None


def _event_view(row: EventRow, *, parse: bool = True) -> dict[str, Any]:
    """An event for a page. A list shows a glimpse of each event's data: the start of the JSON
    text as stored (compact already), not a parse of up to 1 MiB per row."""
    view: dict[str, Any] = {"id": row.id, "name": row.name, "ts": row.ts}
    if not parse:
        view["preview"] = text.cut(row.data, MAX_PREVIEW_CHARS)
        return view
    try:
        view["data"] = codec.loads(row.data)
    except Exception:  # a payload that is not JSON: shown as the text it is
        view["data"] = row.data
    return view


def _with_steps(run: Run, n: int) -> Run:
    return replace(run, steps=run.steps[:n])
