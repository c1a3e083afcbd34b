"""Engine objects as the API's JSON."""

from __future__ import annotations

from typing import Any

from conveyor import text
from conveyor.executor import codec
from conveyor.server.errors import ApiError
from conveyor.storage.base import EventCursor, EventRow, FunctionRow
from conveyor.types import Run


def iso(ts: float | None) -> str | None:
    return None if ts is None else text.iso(ts)


def run_summary(run: Run) -> dict[str, Any]:
    out = run.to_dict()
    del out["steps"], out["progress"]
    return out


def run_full(run: Run) -> dict[str, Any]:
    return run.to_dict()


def event(row: EventRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "data": codec.loads(row.data), "ts": iso(row.ts)}


def function(row: FunctionRow) -> dict[str, Any]:
    s = row.spec
    return {
        "id": s.id, "pool": s.pool, "triggers": list(s.triggers), "cron": s.cron, "retries": s.retries,
        "concurrency": s.concurrency_limit, "concurrency_key": s.concurrency_key,
        "has_on_failure": s.has_on_failure, "updated_at": iso(row.updated_at),
    }


def log_line(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "ts": iso(record["ts"])}


def event_cursor(row: EventRow) -> str:
    return str(EventCursor(row.ts, row.id))


def parse_event_cursor(text: str | None) -> EventCursor | None:
    if not text:
        return None
    try:
        return EventCursor.parse(text)
    except ValueError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None
