"""Log output of Conveyor's processes: readable text, or JSON lines for production.

Records about a run — the ones ``ctx.log`` writes (logger ``conveyor.run``) and the
engine's and workers' own (a failed attempt, a crash, a lost lease, a failed push
delivery) — carry ``run_id``, ``step_id`` and ``attempt`` (0-based, as ``ctx.attempt``)
as record attributes, and often ``function``. Both formats show them: text appends
``[run=… step=… attempt=…]``, JSON has them as keys. JSON lines also carry ``trace_id``
and ``span_id`` when a span is current (OpenTelemetry configured), to join logs to traces.

``conveyor server``, ``conveyor dev`` and ``conveyor worker`` call :func:`configure` with
``--log-format text|json`` (default ``$CONVEYOR_LOG_FORMAT``, else text) and the level
from ``$CONVEYOR_LOG_LEVEL`` (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from conveyor.observability import tracing

FORMATS = ("text", "json")
#: Record attributes that say which run a record is about, in the order they are shown.
RUN_FIELDS = ("function", "run_id", "step_id", "attempt", "pool", "url")
_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    the run fields a record has, ``trace_id``/``span_id`` when traced, and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        for key in RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        ids = tracing.current_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [run=… step=… attempt=…]``."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = [(key, getattr(record, key, None)) for key in ("run_id", "step_id", "attempt")]
        shown = " ".join(f"{key.removesuffix('_id')}={value}" for key, value in fields if value is not None)
        return f"{text} [{shown}]" if shown else text


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def default_format() -> str:
    """``$CONVEYOR_LOG_FORMAT`` if it names a format, else ``text``."""
    value = os.environ.get("CONVEYOR_LOG_FORMAT", "").strip().lower()
    return value if value in FORMATS else "text"


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Send every log record to stderr in ``fmt`` (default :func:`default_format`) from
    ``level`` up (default ``$CONVEYOR_LOG_LEVEL``, then INFO). The connection pool's
    per-attempt warnings are quieted: workers say once that the database is unreachable,
    and once that it is back."""
    fmt = fmt or default_format()
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; one of {', '.join(FORMATS)}")
    name = (level or os.environ.get("CONVEYOR_LOG_LEVEL") or "INFO").strip().upper()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name if name in logging.getLevelNamesMapping() else "INFO")
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
