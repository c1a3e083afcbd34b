"""``GET /metrics``: Prometheus text format.

The counters are this process's (its intake, its push dispatcher, and with ``conveyor
dev`` its worker): :func:`install` attaches them to the engine's hooks when the app is
created, so nothing done before the first scrape is missed. The gauges are read from
the database at each scrape, off the event loop and within :data:`READ_TIMEOUT`; if the
database does not answer they are left out and ``conveyor_scrape_errors_total`` goes up,
so a scrape still answers 200 with the counters.

When the server has API tokens (or event keys) configured, ``/metrics`` needs an API
token like the rest of the management API: Prometheus sends it with
``authorization: {credentials: <token>}`` (bearer) in its scrape config.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from conveyor.engine.engine import Engine
from conveyor.observability.metrics import CONTENT_TYPE, Backlog, Metrics, Readings, metrics_for
from conveyor.server import schemas
from conveyor.server.auth import api_token
from conveyor.server.state import State, state
from conveyor.storage.base import PoolBacklog

READ_TIMEOUT = 5.0  # seconds the database gauges may take before a scrape goes on without them

router = APIRouter()
StateDep = Annotated[State, Depends(state)]


def install(app: FastAPI, engine: Engine) -> None:
    """Serve ``/metrics`` on ``app``, counting from now what ``engine`` does."""
    app.state.metrics = _Scrape(metrics_for(engine.hooks), engine)
    app.include_router(router)


@router.get(
    "/metrics", dependencies=[Depends(api_token)], response_class=Response, responses=schemas.errors(401),
    tags=["metrics"], summary="Prometheus metrics (text format 0.0.4)",
    description="Runs started, completed and failed and step durations by function, events accepted and "
    "rejected, push delivery errors (counted by this process), and the database's queue depth and oldest due "
    "job by pool, dead letters and live workers. Every name starts with `conveyor_`.",
)
async def metrics(request: Request, st: StateDep) -> Response:
    scrape: _Scrape = request.app.state.metrics
    readings: Readings | None = None
    try:
        readings = await asyncio.wait_for(asyncio.to_thread(scrape.read), READ_TIMEOUT)
    except Exception as exc:  # the database is away or slow: the counters are still worth a scrape
        scrape.metrics.scrape_failed(exc)
    return Response(scrape.metrics.render(readings), media_type=CONTENT_TYPE)


class _Scrape:
    """The metrics of one server app, and the database read of its gauges (one at a time: a read
    that outlives its scrape's timeout keeps later scrapes from piling more onto the database)."""

    def __init__(self, metrics: Metrics, engine: Engine) -> None:
        self.metrics = metrics
        self.engine = engine
        self._reading = threading.Lock()

    def read(self) -> Readings:
        if not self._reading.acquire(blocking=False):
            raise TimeoutError("the previous scrape's database read has not returned yet")
        try:
            return read_database(self.engine)
        finally:
            self._reading.release()


def read_database(engine: Engine) -> Readings:
    """The gauges' values, every known pool (of a function, an endpoint or a worker) included."""
    storage = engine.storage
    now = storage.now()
    backlog = {b.pool: b for b in storage.pools_backlog(now)}
    endpoints: dict[str, int] = {}
    for endpoint in storage.endpoints_list():
        endpoints[endpoint.pool] = endpoints.get(endpoint.pool, 0) + 1
    workers: dict[str, int] = {}
    for worker in engine.workers():
        for pool in worker.pools:
            workers[pool] = workers.get(pool, 0) + 1
    pools = {f.spec.pool for f in storage.functions_list()} | set(backlog) | set(endpoints) | set(workers)
    return Readings(
        backlog=[_backlog(pool, backlog.get(pool), now) for pool in sorted(pools)],
        dead_letters=engine.count_runs("failed"),
        workers={pool: workers.get(pool, 0) for pool in pools},
        endpoints=endpoints,
    )


def _backlog(pool: str, row: PoolBacklog | None, now: float) -> Backlog:
    if row is None or row.oldest_due_at is None:
        return Backlog(pool, 0 if row is None else row.due, 0.0)
    return Backlog(pool, row.due, max(0.0, now - row.oldest_due_at))
