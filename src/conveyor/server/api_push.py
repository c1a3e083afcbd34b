"""Push delivery's routes: endpoint registration (API token) and the read-back of running steps.

* ``POST /api/v1/endpoints`` registers (or updates) an endpoint: the URL the dispatcher
  pushes a pool's runs to, the functions it serves (their specs are upserted like a
  worker's), its concurrency, rate and timeout. ``GET`` lists them; ``DELETE ?url=``
  removes one (runs in flight there finish; nothing new is sent).
* ``POST /api/v1/push/view`` answers what a step running at an endpoint may read (a map's
  children's outputs, whether a function exists). It is authenticated by the push
  signature (the server's signing keys), not by an API token, and its answer is signed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from conveyor.errors import InvalidInput, NotFound
from conveyor.push import protocol
from conveyor.push.signing import HEADER, SignatureError, Verifier, sign
from conveyor.server import schemas
from conveyor.server.auth import api_token
from conveyor.server.errors import ApiError, describe
from conveyor.server.state import State, state
from conveyor.server.views import iso
from conveyor.storage.base import Endpoint, FunctionSpec

router = APIRouter(tags=["push"])
StateDep = Annotated[State, Depends(state)]
VIEW_PAGE = 1000  # children's outputs per read


class FunctionSpecIn(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1, max_length=256, pattern=r"^[^/]+(/on-failure)?$")
    pool: str = Field(min_length=1, max_length=256)
    triggers: list[str] = Field(default_factory=list, max_length=100)
    retries: int = Field(ge=0, le=1000)
    concurrency_limit: int | None = Field(default=None, ge=1)
    concurrency_key: str | None = Field(default=None, max_length=256)
    cron: str | None = Field(default=None, max_length=256)
    has_on_failure: bool = False


class EndpointIn(BaseModel):
    model_config = {"extra": "forbid"}

    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://\S+$",
                     description="where the dispatcher POSTs signed invocation batches")
    pool: str = Field(min_length=1, max_length=256, description="the pool whose runs it serves")
    functions: list[FunctionSpecIn] = Field(min_length=1, max_length=10_000)
    concurrency: int = Field(default=16, ge=1, le=100_000, description="invocations in flight at most")
    rate: float | None = Field(default=None, gt=0, le=1_000_000, description="invocations started per second")
    timeout: float = Field(default=300.0, gt=0, le=86_400, description="seconds a request may take")


class EndpointOut(BaseModel):
    url: str
    pool: str
    functions: list[str]
    concurrency: int
    rate: float | None
    timeout: float
    registered_at: str | None
    seen_at: str | None


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


def endpoint_view(e: Endpoint) -> dict[str, Any]:
    return {"url": e.url, "pool": e.pool, "functions": list(e.functions), "concurrency": e.concurrency,
            "rate": e.rate, "timeout": e.timeout, "registered_at": iso(e.registered_at), "seen_at": iso(e.seen_at)}


def _parse(body: bytes) -> EndpointIn:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    try:
        return EndpointIn.model_validate(doc)
    except ValidationError as exc:
        raise InvalidInput(describe(exc.errors())) from None


@router.post("/api/v1/endpoints", dependencies=[Depends(api_token)], response_model=EndpointOut,
             responses=schemas.errors(400, 401, 422),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": EndpointIn.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
             summary="Register a push endpoint (or update the one with this URL)")
async def register_endpoint(request: Request, st: StateDep) -> dict[str, Any]:
    doc = _parse(await request.body())
    specs = [FunctionSpec(f.id, f.pool, tuple(f.triggers), f.retries, f.concurrency_limit, f.concurrency_key,
                          f.cron, f.has_on_failure) for f in doc.functions]
    endpoint = Endpoint(doc.url, doc.pool, tuple(s.id for s in specs), doc.concurrency, doc.rate, doc.timeout)

    def act() -> Endpoint:
        storage = st.engine.storage
        st.engine.ready()
        storage.functions_sync(specs)
        storage.endpoint_register(endpoint)
        storage.notify()  # jobs of its pool may be due already
        return next(e for e in storage.endpoints_list() if e.url == endpoint.url)

    return endpoint_view(await asyncio.to_thread(act))


@router.get("/api/v1/endpoints", dependencies=[Depends(api_token)], response_model=EndpointList,
            responses=schemas.errors(401), summary="The registered push endpoints")
async def list_endpoints(st: StateDep) -> dict[str, Any]:
    rows = await asyncio.to_thread(st.engine.storage.endpoints_list)
    return {"endpoints": [endpoint_view(e) for e in rows]}


@router.delete("/api/v1/endpoints", dependencies=[Depends(api_token)], responses=schemas.errors(401, 404),
               summary="Remove a push endpoint (runs in flight there finish; nothing new is sent)")
async def remove_endpoint(st: StateDep, url: Annotated[str, Query(min_length=1, max_length=2000)]) -> dict[str, Any]:
    if not await asyncio.to_thread(st.engine.storage.endpoint_remove, url):
        raise NotFound(f"no endpoint is registered at {url}")
    return {"removed": url}


def _verifier(request: Request, st: State) -> Verifier:
    verifier: Verifier | None = getattr(request.app.state, "push_verifier", None)
    if verifier is None:
        if not st.config.signing_keys:
            raise SignatureError("push delivery is not enabled on this server (it has no signing key)")
        verifier = request.app.state.push_verifier = Verifier(st.config.signing_keys)
    return verifier


@router.post("/api/v1/push/view", responses=schemas.errors(400, 401, 404, 422), include_in_schema=False)
async def push_view(request: Request, st: StateDep) -> Response:
    body = await request.body()
    verifier = _verifier(request, st)

    def check() -> tuple[str, dict[str, Any]]:  # off the event loop: the body may be large
        return verifier.verify(request.headers.get(HEADER), body).request_id, protocol.decode(body)

    request_id, doc = await asyncio.to_thread(check)
    answer = await asyncio.to_thread(_read, st, doc)
    out = protocol.encode(answer)
    headers = {HEADER: sign(out, st.config.signing_keys, request_id=request_id)}
    return Response(out, media_type="application/json", headers=headers)


def _read(st: State, doc: dict[str, Any]) -> dict[str, Any]:
    view = st.engine.view
    op = doc.get("op")
    if op == "function_exists":
        return {"exists": view.function_exists(_text(doc, "function_id"))}
    run_id, step_id = _text(doc, "run_id"), _text(doc, "step_id")
    if op == "children_outputs":
        offset, limit = _number(doc, "offset"), min(_number(doc, "limit"), VIEW_PAGE)
        return {"outputs": view.children_outputs(run_id, step_id, offset, limit)}
    if op == "child_error":
        return {"error": view.child_error(run_id, step_id, _number(doc, "index"))}
    raise InvalidInput(f"unknown read {op!r}")


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{key!r} must be a non-empty string")
    return value


def _number(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{key!r} must be a non-negative integer")
    return value
