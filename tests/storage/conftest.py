from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.postgres import fresh_schema

from conveyor.storage.base import FunctionSpec, Storage
from conveyor.storage.factory import open_storage

FUNCTIONS = [
    FunctionSpec("one", "default", ("go",), retries=3),
    FunctionSpec("capped", "default", ("capped.go",), retries=3, concurrency_limit=2),
    FunctionSpec("keyed", "default", ("keyed.go",), retries=3, concurrency_limit=1, concurrency_key="event.data.user"),
    FunctionSpec("bg", "background", ("bg.go",), retries=3),
]


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Every storage test runs on every backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
def backend(backend_url: str) -> Iterator[Storage]:
    storage = open_storage(backend_url)
    storage.migrate()
    storage.functions_sync(FUNCTIONS)
    yield storage
    storage.close()
