"""A PostgreSQL server for tests: one throwaway schema per test.

``CONVEYOR_TEST_POSTGRES_URL`` names the server (default: the local one). When it
cannot be reached, PostgreSQL tests are skipped with the reason, except in CI
(``CI`` set) or with ``CONVEYOR_REQUIRE_POSTGRES=1``, where they fail: a green CI
must have run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

BASE_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_problem: list[str] = []


def required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("CONVEYOR_REQUIRE_POSTGRES") == "1"


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL at {BASE_URL} is not reachable: {reason}"
    if required():
        pytest.fail(message + " (CI requires it)", pytrace=False)
    pytest.skip(message)


def with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """Create a schema, yield a URL whose connections use it, drop it afterwards."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test,postgres]')")
        raise
    if _problem:
        _unavailable(_problem[0])
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        _problem.append(str(exc).strip().splitlines()[0])
        _unavailable(_problem[0])
    try:
        yield with_schema(BASE_URL, schema)
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
