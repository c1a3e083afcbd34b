"""Values as text: the one reading of durations, times, errors and glimpses of JSON that the
dashboard, the CLI and the API share."""

from __future__ import annotations

import pytest

from conveyor import text


@pytest.mark.parametrize(("seconds", "spaced", "compact"), [
    (0.0, "<1 ms", "<1ms"), (-5, "<1 ms", "<1ms"), (0.0123, "12 ms", "12ms"), (1.234, "1.23 s", "1.23s"),
    (12.34, "12.3 s", "12.3s"), (75, "1 m 15 s", "1m15s"), (125, "2 m 5 s", "2m05s"), (3600, "1 h", "1h00m"),
    (3725, "1 h 2 m", "1h02m"), (90000, "1 d 1 h", "1d01h"),
])
def test_duration(seconds: float, spaced: str, compact: str) -> None:
    assert text.duration(seconds) == spaced
    assert text.duration(seconds, compact=True) == compact


def test_iso_is_utc() -> None:
    assert text.iso(0.5) == "1970-01-01T00:00:00.500000+00:00"
    assert text.iso(0.5, "milliseconds") == "1970-01-01T00:00:00.500+00:00"
    assert text.iso(60) == "1970-01-01T00:01:00+00:00"


def test_percent() -> None:
    assert text.percent(1, 4) == 25.0 and text.percent(0, 0) == 0.0 and text.percent(3, -1) == 0.0


def test_error_line() -> None:
    error = {"type": "ValueError", "message": "bad", "step_id": "fetch"}
    assert text.error_line(error) == "ValueError: bad"
    assert text.error_line(error, with_step=True) == "[fetch] ValueError: bad"
    assert text.error_line({"type": "Timeout"}, with_step=True) == "Timeout"
    assert text.error_line({"message": "?"}) == "Error: ?"
    assert text.error_line(None) == "" and text.error_line({}) == ""


def test_json_line_and_cut() -> None:
    assert text.json_line({"k": ["é", 1]}) == '{"k": ["é", 1]}'
    circular: list[object] = []
    circular.append(circular)
    assert text.json_line(circular) == "[[...]]"
    assert text.cut("abcdef", 6) == "abcdef" and text.cut("abcdefg", 6) == "abcde…"
