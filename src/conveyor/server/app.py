"""The ASGI application: routes, error shapes, body limits, and the services it runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from fastapi import FastAPI

from conveyor.dashboard.routes import create_router
from conveyor.engine.engine import Engine
from conveyor.server import api_events, api_meta, api_metrics, api_runs, errors
from conveyor.server.auth import AuthGate, Keys
from conveyor.server.config import ServerConfig
from conveyor.server.intake import Intake
from conveyor.server.limits import BodyLimit
from conveyor.server.state import State


class Service(Protocol):
    """A background service the server starts after it is ready and stops before it exits."""

    def start(self) -> Any: ...
    def stop(self, grace: float = ...) -> Any: ...


def create_app(
    engine: Engine,
    config: ServerConfig,
    *,
    services: Sequence[Service] = (),
    on_ready: Callable[[], None] | None = None,
    grace: float = 10.0,
) -> FastAPI:
    intake = Intake(engine, max_pending=config.max_pending, max_backlog=config.max_backlog)
    st = State(engine, config, intake)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(engine.ready)
        intake.start()
        started: list[Service] = []
        try:
            for service in services:
                await asyncio.to_thread(service.start)
                started.append(service)
            if on_ready is not None:
                on_ready()
            yield
        finally:
            await intake.stop()
            for task in list(st.background):
                task.cancel()
            for service in reversed(started):
                await asyncio.to_thread(service.stop, grace)

    app = FastAPI(
        title="Conveyor",
        version=_version(),
        summary="Durable events, runs, dead letters and push delivery",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.conveyor = st
    app.state.keys = Keys(config.event_keys, config.api_tokens)
    errors.install(app)
    app.include_router(api_events.router)
    app.include_router(api_runs.router)
    app.include_router(api_meta.router)
    api_metrics.install(app, engine)  # GET /metrics, counting from now
    for router in _optional_routers():
        app.include_router(router)

    app.include_router(create_router(engine, api_tokens=config.api_tokens, auth=config.auth_enabled))
    app.add_middleware(AuthGate, keys=app.state.keys)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, max_event_bytes=config.max_event_bytes,
                       budget=config.max_inflight_bytes, chunk_timeout=config.read_timeout)  # outermost: runs first
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error in the shape the server really answers with:
    validation errors are ``{"error": ...}`` (400 for a bad query, 422 for a bad body), not
    FastAPI's default ``{"detail": ...}``; any request may also be refused 413 or 431."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for operations in doc.get("paths", {}).values():
        for op in operations.values():
            responses = op.setdefault("responses", {})
            for status, text in (("400", "Malformed request"), ("413", "Request too large"),
                                 ("422", "Wrong shape"), ("431", "Headers too large")):
                responses[status] = {"description": text, **error}
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


def _optional_routers() -> list[Any]:
    out = []
    with contextlib.suppress(ImportError):
        from conveyor.server.api_push import router as push_router

        out.append(push_router)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conveyor")
    except PackageNotFoundError:
        return "0"
