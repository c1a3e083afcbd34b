"""How values look on a page."""

from __future__ import annotations

import pytest

from conveyor.dashboard import format as fmt


@pytest.mark.parametrize("seconds, text", [
    (None, fmt.NONE), (0.0001, "<1 ms"), (0.0123, "12 ms"), (1.234, "1.23 s"), (12.34, "12.3 s"), (75, "1 m 15 s"),
    (3600, "1 h"), (3661, "1 h 1 m"), (90000, "1 d 1 h"), (-5, "<1 ms"),
])
def test_duration(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_age() -> None:
    assert fmt.age(None, 100) == fmt.NONE
    assert fmt.age(99.5, 100) == "just now"
    assert fmt.age(58, 100) == "42 s ago"
    assert fmt.age(100 - 7200, 100) == "2 h ago"
    assert fmt.age(400, 100) == "in 5 m"


def test_counts_and_rates() -> None:
    assert fmt.count(1234567) == "1,234,567"
    assert fmt.percent(0, 0) == fmt.NONE and fmt.percent(0, 10) == "0 %"
    assert fmt.percent(1, 250) == "0.4 %" and fmt.percent(3, 10) == "30 %"
    assert fmt.rate(0) == fmt.NONE and fmt.rate(0.5) == "30.0/min"
    assert fmt.rate(2.5) == "2.5/s" and fmt.rate(1234) == "1,234/s"


def test_json_is_cut_for_huge_values_and_says_so() -> None:
    small = fmt.pretty_json({"a": [1, 2]})
    assert not small.truncated and '"a"' in small.text
    big = fmt.pretty_json({"blob": "x" * 100_000})
    assert big.truncated and len(big.text) == fmt.MAX_JSON_CHARS and big.total > 100_000
    assert fmt.preview({"k": "v" * 500}).endswith("…") and len(fmt.preview({"k": "v" * 500})) == fmt.MAX_PREVIEW_CHARS
    circular: list[object] = []
    circular.append(circular)
    assert fmt.pretty_json(circular).text  # not an exception


def test_error_line() -> None:
    assert fmt.error_line({"type": "ValueError", "message": "bad"}) == "ValueError: bad"
    assert fmt.error_line({"type": "Timeout"}) == "Timeout"
    assert fmt.error_line(None) == ""
