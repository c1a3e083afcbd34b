from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor.storage.base import FunctionSpec, Storage
from conveyor.storage.factory import open_storage


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Storage]:
    """Every storage test runs on each backend (PostgreSQL joins this list)."""
    storage = open_storage(f"sqlite:///{tmp_path}/store.db")
    storage.migrate()
    storage.functions_sync([
        FunctionSpec("one", "default", ("go",), retries=3),
        FunctionSpec("capped", "default", ("capped.go",), retries=3, concurrency_limit=2),
        FunctionSpec("keyed", "default", ("keyed.go",), retries=3, concurrency_limit=1,
                     concurrency_key="event.data.user"),
        FunctionSpec("bg", "background", ("bg.go",), retries=3),
    ])
    yield storage
    storage.close()
