"""The pages' query parameters: times, windows, cursors and the shape of each value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.dashboard.params import (
    WINDOWS,
    BadInput,
    RunQuery,
    event_cursor,
    ident,
    page_link,
    run_query,
    time_range,
    when,
)
from conveyor.storage.base import EventCursor

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text, expected", [
    ("90m", NOW - 5400), ("24h", NOW - 86400), ("7d", NOW - 7 * 86400), ("2w", NOW - 14 * 86400), ("30s", NOW - 30),
    ("2025-01-31T11:00", NOW - 3600), ("2025-01-31 11:00", NOW - 3600), ("2025-01-31T13:00+02:00", NOW - 3600),
    ("2025-01-31T11:00:00Z", NOW - 3600), ("2025-01-31", NOW - 12 * 3600), (str(NOW - 10), NOW - 10),
    ("1.5h", NOW - 5400),
])
def test_times(text: str, expected: float) -> None:
    assert when(text, NOW, name="since") == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "1e400", "nan", "-1", "inf", "10000-01-01", "5y", "-2h", "T12"])
def test_bad_times(text: str) -> None:
    with pytest.raises(BadInput):
        when(text, NOW, name="since")


def test_a_window_and_since_take_the_later_start() -> None:
    q = RunQuery(window="24h", since="1h")
    assert time_range(q, NOW) == (pytest.approx(NOW - 3600), None)
    q = RunQuery(window="1h", since="2025-01-01")
    assert time_range(q, NOW) == (pytest.approx(NOW - 3600), None)
    with pytest.raises(BadInput, match="until must be later"):
        time_range(RunQuery(since="1h", until="2h"), NOW)


def test_run_query_reads_and_links() -> None:
    q = run_query({"function": " f ", "status": "failed", "window": "1h", "cursor": "01abc", "x": "ignored"})
    assert (q.function, q.status, q.window, q.cursor) == ("f", "failed", "1h", "01abc")
    assert q.link() == "/runs?function=f&status=failed&window=1h"
    assert q.link(cursor="01xyz", status=None) == "/runs?function=f&window=1h&cursor=01xyz"
    assert not q.top_level and RunQuery().top_level and not RunQuery(children="1").top_level
    for bad in ({"status": "nope"}, {"window": "2h"}, {"cursor": "a b"}, {"function": "x" * 301},
                {"function": "a\x00"}, {"children": "maybe"}):
        with pytest.raises(BadInput):
            run_query(bad)


def test_page_links_leave_out_what_has_no_value() -> None:
    assert page_link("/events") == "/events"
    assert page_link("/events", name=None, internal="1") == "/events?internal=1"
    link = page_link("/dead-letters", function="a b/c&d", cursor="01x")
    assert link == "/dead-letters?function=a+b%2Fc%26d&cursor=01x"


@pytest.mark.parametrize("window", list(WINDOWS))
def test_each_window_offered_is_its_length(window: str) -> None:
    assert time_range(RunQuery(window=window), NOW) == (pytest.approx(NOW - WINDOWS[window].seconds), None)


def test_event_cursors() -> None:
    assert event_cursor(None) is None
    assert event_cursor("1738324800.5~ev/1~x") == EventCursor(1738324800.5, "ev/1~x")
    assert event_cursor(str(EventCursor(1738324800.5, "ev/1~x"))) == EventCursor(1738324800.5, "ev/1~x")
    for bad in ("x", "1.5", "1.5~", "nan~a", "inf~a", "~a"):
        with pytest.raises(BadInput):
            event_cursor(bad)


def test_ids() -> None:
    assert ident("01abc.def.000000001") == "01abc.def.000000001"
    assert ident("cron/f/1738324800") == "cron/f/1738324800"
    for bad in ("", "a\x00b", "x" * 301, "a\nb", "\ud800"):
        assert ident(bad) is None
