"""How values look on a page: durations, ages, times, counts, JSON.

Pure functions, registered as Jinja filters by :mod:`conveyor.dashboard.render`.
Times are shown in UTC by the server (the page's script rewrites the tooltip into
the reader's time zone); anything that can be huge is cut to a size a browser
renders without trouble, and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor import text

#: Characters of pretty JSON shown for one value (an output, an event's data, an error).
MAX_JSON_CHARS = 20_000
#: Characters of a one-line JSON preview in a table cell.
MAX_PREVIEW_CHARS = 120
#: What an absent value looks like (an en dash).
NONE = "\u2013"


def duration(seconds: float | None) -> str:
    """``0.42`` → ``420 ms``; ``75`` → ``1 m 15 s``; ``90000`` → ``1 d 1 h`` (see :func:`conveyor.text.duration`)."""
    if seconds is None or math.isnan(seconds):
        return NONE
    return text.duration(seconds)


def age(then: float | None, now: float) -> str:
    """How long ago ``then`` was: ``just now``, ``42 s ago``, ``3 m ago``, ``in 5 m`` (future)."""
    if then is None:
        return NONE
    delta = now - then
    if abs(delta) < 1:
        return "just now"
    span = _coarse(abs(delta))
    return f"{span} ago" if delta > 0 else f"in {span}"


def _coarse(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def utc(ts: float | None) -> str:
    """``2025-01-31 14:05:09 UTC``."""
    if ts is None:
        return NONE
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    """The machine-readable form, for ``<time datetime=...>`` (milliseconds: what every browser parses)."""
    return "" if ts is None else text.iso(ts, "milliseconds")


def clock(ts: float | None) -> str:
    """``14:05:09.123``: a time of day with milliseconds, for log lines."""
    if ts is None:
        return NONE
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def ts_of(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def count(n: int | float | None) -> str:
    """``1234567`` → ``1,234,567``."""
    if n is None:
        return NONE
    return f"{int(n):,}"


def percent(part: int, whole: int) -> str:
    """A failure rate: ``0 %``, ``0.4 %``, ``12 %``; a dash when there is nothing to divide."""
    if whole <= 0:
        return NONE
    value = text.percent(part, whole)
    if value == 0:
        return "0 %"
    if value < 10:
        return f"{value:.1f} %"
    return f"{value:.0f} %"


def rate(per_second: float | None) -> str:
    if not per_second:
        return NONE
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


@dataclass(frozen=True, slots=True)
class JsonText:
    """Indented JSON, cut at a limit: ``total`` is the length of the whole text."""

    text: str
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.text)


def pretty_json(value: Any, limit: int = MAX_JSON_CHARS) -> JsonText:
    """Indented JSON of ``value``, at most ``limit`` characters of it."""
    try:
        pretty = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # a circular structure, or keys JSON cannot hold
        pretty = repr(value)
    return JsonText(pretty[:limit], len(pretty))


def preview(value: Any, limit: int = MAX_PREVIEW_CHARS) -> str:
    """One line of JSON, cut with an ellipsis: a table cell's glimpse of a value."""
    return text.cut(text.json_line(value), limit)


def error_line(error: dict[str, Any] | None) -> str:
    """``ValueError: the file is empty``: an error's one-line summary."""
    return text.error_line(error)
