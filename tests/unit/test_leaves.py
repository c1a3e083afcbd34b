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
