"""Fixtures of the HTTP server tests: real ``conveyor server`` processes on real databases.

* ``conveyor_app``: an app in the test process whose functions are registered in the
  test's database (so the server, which loads no app, routes events to them), and
  which drains runs in-process (``app.drain()``) when a test wants them to end.
* ``server`` / ``auth_server``: a server on that database (open, or with
  ``--event-key ek-secret --api-token at-secret``); stopped with SIGTERM at teardown,
  which must end it with status 0 (graceful shutdown).
* ``shared_server`` / ``shared_auth_server``: one server per backend for a whole
  module, for the bad-input matrices whose every case leaves the database as it was.
* ``start_server``: a factory, for tests that start, kill and restart servers.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import FAST_BACKOFF_KWARGS, sqlite_url
from tests.support.postgres import fresh_schema

import conveyor

from .helpers import API_TOKEN, EVENT_KEY, Server, start_server

AUTH_ARGS = ("--event-key", EVENT_KEY, "--api-token", API_TOKEN)


@dataclass
class Registered:
    """The test process's app, whose functions are registered in the server's database."""

    app: Any
    flaky: dict[str, Any]  # {"fail": bool, "prepared": int}: steers the ``flaky`` function


def define_functions(app: Any, knobs: dict[str, Any]) -> None:
    """The functions every server test can route events to (ids in comments)."""

    @app.function(on="user.signup", retries=0)  # greet
    def greet(ctx):
        ctx.log.info("greeting %s", ctx.event.data.get("name", "you"))
        text = ctx.step.run("hello", lambda: f"hi {ctx.event.data.get('name', 'you')}")
        return {"greeting": text}

    @app.function(on="job.flaky", retries=0, pool="background")  # flaky
    def flaky(ctx):
        def prepare():
            knobs["prepared"] += 1
            return "ready"

        def attempt():
            if knobs["fail"]:
                raise RuntimeError("flaky failed on purpose")
            return "ok"

        ctx.step.run("prepare", prepare)
        return ctx.step.run("attempt", attempt)

    @app.function(on="echo.me", retries=0)  # echo
    def echo(ctx):
        return {"id": ctx.event.id, "name": ctx.event.name, "data": ctx.event.data}

    @app.function(on="burst.item", retries=0)  # burst-a
    def burst_a(ctx):
        return ctx.event.id

    @app.function(on=["burst.item", "burst.other"], retries=0, concurrency=2)  # burst-b
    def burst_b(ctx):
        return ctx.event.id


def new_app(db_url: str, blob_dir: Path) -> Registered:
    """An app with :func:`define_functions` on ``db_url``, migrated and registered."""
    app = conveyor.Conveyor(
        "t", database=db_url, backoff=conveyor.Backoff(**FAST_BACKOFF_KWARGS), blob_dir=blob_dir,
    )
    flaky = {"fail": True, "prepared": 0}
    define_functions(app, flaky)
    app.migrate()  # creates the schema and syncs the functions (and their triggers) to the database
    return Registered(app, flaky)


@pytest.fixture
def conveyor_app(db_url: str, tmp_path: Path) -> Iterator[Registered]:
    registered = new_app(db_url, tmp_path / "blobs")
    yield registered
    registered.app.close()


@pytest.fixture
def fresh_app(db_url: str, tmp_path: Path) -> Iterator[Callable[[], Registered]]:
    """A factory of new app instances on the test's database (nothing cached in-process)."""
    made: list[Registered] = []

    def make() -> Registered:
        registered = new_app(db_url, tmp_path / "blobs")
        made.append(registered)
        return registered

    yield make
    for registered in made:
        registered.app.close()


class ServerFactory:
    """Starts servers; at teardown, stops the live ones with SIGTERM and checks they exit 0."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []

    def __call__(self, db_url: str, *args: str, token: str | None = None, **kwargs: Any) -> Server:
        server = start_server(db_url, self.workdir, *args, token=token, **kwargs)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        problems = []
        for server in self.servers:
            if server.proc.poll() is not None:
                server.close_clients()
                continue  # ended by the test itself (which checked what it wanted)
            code = server.stop(signal.SIGTERM)
            if code != 0:
                problems.append(f"{server.url}: exit status {code} after SIGTERM; stderr:\n{server.stderr()}")
        assert not problems, "\n".join(problems)


@pytest.fixture(name="start_server")
def start_server_fixture(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path / "servers")
    yield factory
    factory.stop_all()


@pytest.fixture
def server(conveyor_app: Registered, db_url: str, start_server: ServerFactory) -> Server:
    """An open server (no keys: loopback only) on the test's database."""
    return start_server(db_url)


@pytest.fixture
def auth_server(conveyor_app: Registered, db_url: str, start_server: ServerFactory) -> Server:
    """A server that requires keys; its clients send the API token by default."""
    return start_server(db_url, *AUTH_ARGS, token=API_TOKEN)


# ---- one server per backend for a whole module ----------------------------------------------------

_shared_names = itertools.count()


@dataclass
class Shared:
    server: Server
    app: Any


def _shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, *args: str,
            token: str | None = None) -> Iterator[Shared]:
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"shared-{backend}-{next(_shared_names)}")
    database = fresh_schema() if backend == "postgres" else contextlib.nullcontext(sqlite_url(workdir / "conveyor.db"))
    with database as db_url:
        registered = new_app(db_url, workdir / "blobs")
        factory = ServerFactory(workdir / "servers")
        try:
            yield Shared(factory(db_url, *args, token=token), registered.app)
            factory.stop_all()
        finally:
            for server in factory.servers:
                server.kill()
            registered.app.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """An open server and an app on one database per backend, for every test of a module."""
    yield from _shared(request, tmp_path_factory)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_auth_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """Like ``shared_server``, with ``--event-key ek-secret --api-token at-secret``."""
    yield from _shared(request, tmp_path_factory, *AUTH_ARGS, token=API_TOKEN)
