"""Engine objects as the API's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conveyor.executor import codec
from conveyor.server.errors import ApiError
from conveyor.storage.base import EventCursor, EventRow, FunctionRow
from conveyor.types import Run


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


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
    return f"{row.ts!r}~{row.id}"


def parse_event_cursor(text: str | None) -> EventCursor | None:
    if not text:
        return None
    ts, sep, event_id = text.partition("~")
    try:
        value = float(ts)
    except ValueError:
        value = float("nan")
    if not sep or value != value or value in (float("inf"), float("-inf")):
        raise ApiError(400, "invalid_query", "invalid cursor; pass the 'next' value of the previous page")
    return EventCursor(value, event_id)
