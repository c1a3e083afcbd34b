"""The pages' query parameters, read strictly: a bad one is a 400 page that says which.

Nothing here trusts its input: every value has a length bound, no control
characters, and a shape (a status among the known ones, a time that is a time, a
cursor of the form the previous page gave). Unknown parameters are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlencode

from conveyor.storage.base import EventCursor
from conveyor.types import RunStatus, parse_time

STATUSES = tuple(s.value for s in RunStatus)


@dataclass(frozen=True, slots=True)
class Window:
    """A time window the runs page offers: its length, and its name in the page's <select>."""

    seconds: float
    label: str


#: The time windows offered by the runs page, by their value in the URL.
WINDOWS = {"15m": Window(900, "Last 15 minutes"), "1h": Window(3600, "Last hour"),
           "24h": Window(86400, "Last 24 hours"), "7d": Window(7 * 86400, "Last 7 days")}
MAX_TEXT = 300
PAGE_SIZE = 50


class BadInput(ValueError):
    """A query parameter the page cannot use; its message is shown to the reader."""


def text(params: Mapping[str, str], name: str, *, limit: int = MAX_TEXT) -> str | None:
    """A trimmed text parameter, or None when absent or empty."""
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limit:
        raise BadInput(f"{name} is too long (at most {limit} characters)")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in value):
        raise BadInput(f"{name} contains control characters")
    return value


def ident(value: str) -> str | None:
    """A run or event id from a path or a form, or None if no run or event can have it (ids are
    at most a few hundred characters, without control characters): such a request is a 404,
    never a query the database would refuse."""
    if not value or len(value) > MAX_TEXT or any(ord(c) < 0x20 or 0xD800 <= ord(c) < 0xE000 for c in value):
        return None
    return value


def status(params: Mapping[str, str]) -> str | None:
    value = text(params, "status")
    if value is not None and value not in STATUSES:
        raise BadInput(f"unknown status {value!r}; one of {', '.join(STATUSES)}")
    return value


def when(value: str, now: float, *, name: str) -> float:
    """A point in time (see :func:`conveyor.types.parse_time`), or a :class:`BadInput` naming ``name``."""
    try:
        return parse_time(value, now)
    except ValueError as exc:
        raise BadInput(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The runs page's filters, as given (for links) and as times (for the query)."""

    function: str | None = None
    status: str | None = None
    event: str | None = None
    parent: str | None = None
    window: str | None = None
    since: str | None = None
    until: str | None = None
    children: str | None = None  # "1": child runs too, when no function, event or parent is chosen
    cursor: str | None = None

    def link(self, **changes: Any) -> str:
        """The runs page with these filters (and ``changes``), starting from the newest."""
        values = replace(self, **{"cursor": None, **changes})
        return page_link("/runs", **{f.name: getattr(values, f.name) for f in fields(values)})

    @property
    def filtered(self) -> bool:
        return any((self.function, self.status, self.event, self.parent, self.window, self.since, self.until,
                    self.children))

    @property
    def top_level(self) -> bool:
        """Whether child runs are left out: by default, unless a function, an event or a parent is
        chosen (a function's runs may all be children, of a map)."""
        return not (self.children or self.function or self.event or self.parent)


def page_link(path: str, **params: str | None) -> str:
    """A link to the page at ``path`` with these query parameters (those without a value left
    out, the others in the order given): the pages' filters, and their pagers' cursors."""
    query = urlencode([(name, value) for name, value in params.items() if value])
    return path + (f"?{query}" if query else "")


def run_query(params: Mapping[str, str]) -> RunQuery:
    window = text(params, "window")
    if window is not None and window not in WINDOWS:
        raise BadInput(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    return RunQuery(
        function=text(params, "function"), status=status(params), event=text(params, "event"),
        parent=text(params, "parent"), window=window, since=text(params, "since", limit=40),
        until=text(params, "until", limit=40), children=flag(params, "children"), cursor=cursor(params),
    )


def flag(params: Mapping[str, str], name: str) -> str | None:
    """A checkbox: ``"1"`` when ticked, None otherwise."""
    value = text(params, name, limit=5)
    if value is None or value.lower() in ("0", "false", "off", "no"):
        return None
    if value.lower() not in ("1", "true", "on", "yes"):
        raise BadInput(f"{name} must be 1 or 0")
    return "1"


def time_range(query: RunQuery, now: float) -> tuple[float | None, float | None]:
    """``(since, until)`` in Unix seconds: the later of the window and ``since``, and ``until``."""
    starts = [now - WINDOWS[query.window].seconds] if query.window else []
    if query.since:
        starts.append(when(query.since, now, name="since"))
    until = when(query.until, now, name="until") if query.until else None
    since = max(starts) if starts else None
    if since is not None and until is not None and until <= since:
        raise BadInput("until must be later than since")
    return since, until


_CURSOR = re.compile(r"^[0-9A-Za-z._~:/+=-]{1,200}$")


def cursor(params: Mapping[str, str], name: str = "cursor") -> str | None:
    """An opaque page cursor, as the previous page's "older" link gave it."""
    value = text(params, name)
    if value is not None and not _CURSOR.match(value):
        raise BadInput("invalid cursor; follow the page's own links")
    return value


def event_cursor(value: str | None) -> EventCursor | None:
    """An events page cursor, as the page's "older" link gave it."""
    if value is None:
        return None
    try:
        return EventCursor.parse(value)
    except ValueError:
        raise BadInput("invalid cursor; follow the page's own links") from None
