"""``push_env``: the whole push path on the test's database, every piece real.

* the server: ``conveyor.server.app.create_app`` (intake, API with token auth, the push
  routes) served by uvicorn on a loopback port, running a real :class:`Dispatcher` as a
  service, over a real SQLite file or a PostgreSQL schema;
* the endpoint: a FastAPI service with a live route and the app's ``serve()`` mounted at
  ``/live/`` and ``/background/`` (two endpoints of the same code, as the same image run
  as two pools), each behind a :class:`~tests.push.harness.Faulty` middleware, served by
  uvicorn; optionally behind a :class:`~tests.push.harness.ResettingProxy`;
* registration through the real API (``app.register_endpoint``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from tests.conftest import FAST_BACKOFF_KWARGS, Tally, wait_until

import conveyor
from conveyor.server.app import create_app
from conveyor.server.config import ServerConfig
from conveyor.worker.dispatcher import Dispatcher

from .apps import define
from .harness import API_TOKEN, KEY, Faulty, ResettingProxy, Served

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class PushEnv:
    code: Any  # the app whose code the endpoints serve (also used to send and inspect)
    server: Served
    endpoint: Served
    dispatcher: Dispatcher
    faults: dict[str, Faulty]
    tally: Tally
    proxy: ResettingProxy | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def url(self, mount: str) -> str:
        base = self.proxy.url if self.proxy is not None else self.endpoint.url
        return f"{base}/{mount}/"

    def register(self, mount: str, pool: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", 10.0)
        self.code.register_endpoint(self.url(mount), server_url=self.server.url, pool=pool or mount,
                                    api_token=API_TOKEN, **kwargs)

    def run_of(self, event_id: str) -> str:
        runs = wait_until(lambda: self.code.runs_for_event(event_id), 10, f"a run of event {event_id}")
        return str(runs[0].id)

    def send(self, name: str, data: dict[str, Any]) -> str:
        return self.run_of(self.code.send(name, data))

    def wait(self, run_id: str, timeout: float = 60.0) -> Any:
        wait_until(lambda: self.code.get_run(run_id).status in TERMINAL, timeout,
                   lambda: f"run {run_id} to end (it is {self.code.get_run(run_id).status})")
        return self.code.get_run(run_id)


def endpoint_service(code: Any, *, signing_key: str, fallback: str | None) -> tuple[FastAPI, dict[str, Faulty]]:
    api = FastAPI()

    @api.get("/score/{company}")
    def live_score(company: str) -> dict[str, Any]:  # the live traffic the same service serves
        return {"company": company, "score": len(company)}

    faults = {}
    for mount in ("live", "background"):
        faults[mount] = Faulty(code.serve(signing_key=signing_key, fallback_signing_key=fallback))
        api.mount(f"/{mount}", faults[mount])
    return api, faults


@pytest.fixture
def make_push_env(db_url: str, tmp_path: Path, tally: Tally) -> Iterator[Callable[..., PushEnv]]:
    envs: list[PushEnv] = []

    def make(
        *, dispatcher_keys: tuple[str, str | None] = (KEY, None), endpoint_keys: tuple[str, str | None] = (KEY, None),
        proxy: bool = False, **dispatcher_kwargs: Any,
    ) -> PushEnv:
        backend = conveyor.Conveyor("server", database=db_url, blob_dir=tmp_path / "blobs")
        engine = backend._engine()
        server = Served()  # bound first: the dispatcher needs its URL
        dispatcher_kwargs.setdefault("refresh", 0.1)
        dispatcher_kwargs.setdefault("poll_interval", 0.2)
        dispatcher_kwargs.setdefault("retry_backoff", conveyor.Backoff(base=0.05, cap=0.5, factor=2.0, jitter=0.0))
        dispatcher = Dispatcher(engine, signing_key=dispatcher_keys[0], fallback_key=dispatcher_keys[1],
                                view_url=f"{server.url}/api/v1/push/view", **dispatcher_kwargs)
        config = ServerConfig(api_tokens=(API_TOKEN,), signing_keys=tuple(k for k in dispatcher_keys if k))
        server.start(create_app(engine, config, services=[dispatcher]))
        code = conveyor.Conveyor("push-code", database=db_url, backoff=conveyor.Backoff(**FAST_BACKOFF_KWARGS),
                                 blob_dir=tmp_path / "blobs")
        define(code, tally)
        api, faults = endpoint_service(code, signing_key=endpoint_keys[0], fallback=endpoint_keys[1])
        endpoint = Served(api).start()
        env = PushEnv(code, server, endpoint, dispatcher, faults, tally)
        if proxy:
            env.proxy = ResettingProxy(endpoint.port)
        envs.append(env)
        return env

    yield make
    for env in reversed(envs):
        env.endpoint.stop()
        env.server.stop()
        if env.proxy is not None:
            env.proxy.close()
        env.code.close()


@pytest.fixture
def push_env(make_push_env: Callable[..., PushEnv]) -> PushEnv:
    """The default environment: both endpoints registered, for the pools ``live`` and ``background``."""
    env = make_push_env()
    env.register("live")
    env.register("background")
    return env
