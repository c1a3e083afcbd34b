"""Functions known to the database, and health."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from conveyor.server import schemas, views
from conveyor.server.auth import api_token
from conveyor.server.errors import error_response
from conveyor.server.state import State, state

router = APIRouter()
StateDep = Annotated[State, Depends(state)]


@router.get("/api/v1/functions", dependencies=[Depends(api_token)], response_model=schemas.FunctionList,
            responses=schemas.errors(401), tags=["functions"],
            summary="Every function an app registered with this database, with its triggers and pool")
async def list_functions(st: StateDep) -> dict[str, Any]:
    rows = await asyncio.to_thread(st.engine.storage.functions_list)
    return {"functions": [views.function(r) for r in rows]}


@router.api_route("/healthz", methods=["GET", "HEAD"], response_model=schemas.Health,
                  responses=schemas.errors(503), tags=["health"], summary="200 when the database answers")
async def healthz(st: StateDep) -> Any:
    storage = st.engine.storage
    try:
        await asyncio.wait_for(asyncio.to_thread(storage.ping), timeout=5.0)
    except Exception as exc:
        return error_response(503, "database_unavailable", f"the database does not answer ({type(exc).__name__})",
                              {"Retry-After": "1"})
    return {"status": "ok", "database": storage.url.split(":", 1)[0]}
