"""Shared fixtures for every test tree.

Tests wait on conditions, never on fixed sleeps: :func:`wait_until` polls a
predicate every 10 ms and fails with a clear message at its bound.

One suite, every backend: a test that uses ``db_url`` (directly, or through
``make_app``/``app``/the e2e fixtures) runs once per backend, with ids ending in
``[sqlite]`` and ``[postgres]``. SQLite gets a file in ``tmp_path``; PostgreSQL a
throwaway schema (see :mod:`tests.support.postgres`: skipped locally when the
server is unreachable, a failure in CI). A test about one backend's specifics says
so with ``@pytest.mark.backends("sqlite")``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.postgres import fresh_schema

#: Keeps retries fast in tests: the n-th retry waits at most 50 ms.
FAST_BACKOFF_KWARGS = {"base": 0.01, "cap": 0.05}


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    message: str | Callable[[], str] | None = None,
    interval: float = 0.01,
) -> Any:
    """Poll ``predicate`` every ``interval`` s until it returns a truthy value.

    Returns that value. Fails the test if ``timeout`` seconds pass first; the
    message (a string, or a callable evaluated at failure time to describe the
    state) says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout}s waiting for: {what or predicate!r}")
        time.sleep(interval)


def sqlite_url(path: Path) -> str:
    """An absolute SQLite URL (four slashes) for ``path``."""
    path = Path(path).resolve()
    return "sqlite:///" + str(path)


class Tally:
    """A thread-safe counter of named things (step bodies run, calls made, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._events: list[tuple[str, Any]] = []

    def hit(self, key: str, value: Any = None) -> int:
        with self._lock:
            self._counts[key] += 1
            self._events.append((key, value))
            return self._counts[key]

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def values(self, key: str) -> list[Any]:
        """The values passed with each hit of ``key``, in order."""
        with self._lock:
            return [v for k, v in self._events if k == key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def tally() -> Tally:
    return Tally()


#: Every backend the suite runs on, in id order.
BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): run only on these backends (for tests of one backend's specifics); "
        f"default: all of {', '.join(BACKENDS)}",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that needs a database over the backends."""
    if "backend_name" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = tuple(marker.args) if marker else BACKENDS
    unknown = set(names) - set(BACKENDS)
    if unknown or not names:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown backends {sorted(unknown)}")
    metafunc.parametrize("backend_name", names, ids=list(names), scope="function")


@pytest.fixture
def backend_name() -> str:
    """The backend under test; parametrized by :func:`pytest_generate_tests`."""
    raise AssertionError("backend_name is parametrized by pytest_generate_tests")  # pragma: no cover


@pytest.fixture
def db_path(backend_name: str, tmp_path: Path) -> Path:
    """The SQLite file of a ``[sqlite]`` test (only SQLite tests may ask for it)."""
    if backend_name != "sqlite":
        raise pytest.UsageError("db_path is a SQLite file: mark the test @pytest.mark.backends('sqlite')")
    return tmp_path / "conveyor.db"


@pytest.fixture
def db_url(backend_name: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the backend under test."""
    if backend_name == "sqlite":
        yield sqlite_url(tmp_path / "conveyor.db")
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
def make_app(db_url: str) -> Iterator[Callable[..., Any]]:
    """Factory of ``Conveyor`` apps on the test's database, closed at teardown.

    Defaults: fast backoff; every keyword can be overridden.
    """
    import conveyor

    apps: list[Any] = []

    def factory(name: str = "test", **kwargs: Any) -> Any:
        kwargs.setdefault("database", db_url)
        kwargs.setdefault("backoff", conveyor.Backoff(**FAST_BACKOFF_KWARGS))
        app = conveyor.Conveyor(name, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in reversed(apps):
        app.close()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    """A fresh app on a fresh database of the backend under test."""
    return make_app()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Any]]:
    """Start ``app.worker(...)`` in the background; every worker is stopped at teardown."""
    workers: list[Any] = []

    def start(app: Any, **kwargs: Any) -> Any:
        worker = app.worker(**kwargs)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in reversed(workers):
        worker.stop(grace=5)
