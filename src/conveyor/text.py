"""Values as text, the same wherever they are shown: the dashboard, the CLI and the API.

Pure functions of the standard library (a leaf: nothing of the project is imported).
What an absent value looks like is the caller's: a page shows an en dash, a terminal a
hyphen, the API ``null``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

ELLIPSIS = "…"
#: Units of a duration of a minute or more: (unit, its seconds, the next smaller unit, its seconds).
_UNITS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


def duration(seconds: float, *, compact: bool = False) -> str:
    """How long something took (a negative time is taken as none).

    ``<1 ms``, ``420 ms``, ``1.23 s``, ``12.3 s``, ``1 m 15 s``, ``1 h``, ``1 d 1 h``; ``compact``
    (terminal tables, ``key=value`` lines) has no spaces and always two units past a minute:
    ``420ms``, ``1.23s``, ``2m05s``, ``1h00m``.
    """
    sep = "" if compact else " "
    seconds = max(0.0, seconds)
    if seconds < 0.0005:
        return f"<1{sep}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}{sep}ms"
    if seconds < 10:
        return f"{seconds:.2f}{sep}s"
    if seconds < 60:
        return f"{seconds:.1f}{sep}s"
    whole = int(seconds)
    for unit, size, sub, sub_size in _UNITS:
        if whole >= size:
            major, rest = divmod(whole, size)
            minor = rest // sub_size
            if compact:
                return f"{major}{unit}{minor:02d}{sub}"
            return f"{major} {unit} {minor} {sub}" if minor else f"{major} {unit}"
    raise AssertionError("unreachable: every duration of a minute or more has a unit")  # pragma: no cover


def iso(ts: float, timespec: str = "auto") -> str:
    """Unix seconds as ISO 8601 in UTC: ``2025-01-31T14:05:09.123000+00:00`` (``timespec`` as
    :meth:`datetime.isoformat` takes it)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec)


def percent(part: float, whole: float) -> float:
    """``part`` in percent of ``whole``; 0 when there is nothing to divide."""
    return 100.0 * part / whole if whole > 0 else 0.0


def error_line(error: dict[str, Any] | None, *, with_step: bool = False) -> str:
    """An error's one-line summary: ``ValueError: the file is empty``, ``Timeout`` (no message);
    ``with_step``, the step it happened in first: ``[fetch] ValueError: ...``."""
    if not error:
        return ""
    kind = str(error.get("type") or "Error")
    message = str(error.get("message") or "")
    line = f"{kind}: {message}" if message else kind
    step = error.get("step_id") if with_step else None
    return f"[{step}] {line}" if step else line


def json_line(value: Any) -> str:
    """``value`` as one line of JSON (a value JSON cannot hold: its ``repr``)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    except (TypeError, ValueError):  # a circular structure, or keys JSON cannot hold
        return repr(value)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and an ellipsis when it is longer."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
