from __future__ import annotations

import pytest

from conveyor.cron import parse_cron
from conveyor.errors import InvalidInput, SerializationError
from conveyor.executor import codec
from conveyor.ids import new_id


def test_ids_sort_by_creation() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == 2000 and all(len(i) == 26 for i in ids)


def test_codec_names_what_is_not_serializable() -> None:
    with pytest.raises(SerializationError, match="the output of step 'x' is not JSON-serializable"):
        codec.dumps({"a": {1, 2}}, what="the output of step 'x'")
    with pytest.raises(SerializationError):
        codec.dumps(float("nan"))


@pytest.mark.parametrize("expr", ["0 3 1 * *", "*/15 * * * *", "0 9-17 * * mon-fri", "@daily", "5,10 0 * jan,jul 0"])
def test_cron_accepts_standard_expressions(expr: str) -> None:
    assert parse_cron(expr).minutes


@pytest.mark.parametrize("expr", ["", "* * *", "61 * * * *", "* 24 * * *", "a b c d e", "*/0 * * * *", "5-1 * * * *"])
def test_cron_rejects_malformed_expressions_clearly(expr: str) -> None:
    with pytest.raises(InvalidInput, match="cron expression"):
        parse_cron(expr)


@pytest.mark.parametrize("text, expected", [
    ("90s", 1_000_000 - 90), ("15m", 1_000_000 - 900), ("1.5h", 1_000_000 - 5400), ("7d", 1_000_000 - 7 * 86400),
    ("30000000000", 30_000_000_000.0),  # Unix seconds, never milliseconds
    ("2026-12-01T08:00:00Z", 1796112000.0), ("2026-12-01T08:00", 1796112000.0),  # naive is UTC
    ("2026-12-01T09:00+01:00", 1796112000.0),
])
def test_parse_time_reads_ages_seconds_and_iso(text: str, expected: float) -> None:
    from conveyor.types import parse_time

    assert parse_time(text, 1_000_000.0) == expected


@pytest.mark.parametrize("text", ["yesterday", "-5m", "-5", "12x", "nan", "inf", "1e400", "10000-01-01", ""])
def test_parse_time_refuses_everything_else(text: str) -> None:
    from conveyor.types import parse_time

    with pytest.raises(ValueError, match=r"not a time|out of range"):
        parse_time(text, 1_000_000.0)
