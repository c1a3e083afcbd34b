"""``/api/v1/events``: durable intake, and the events that came in."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import JSONResponse

from conveyor.errors import NotFound
from conveyor.server import schemas, views
from conveyor.server.auth import api_token, intake_key
from conveyor.server.intake import parse_events
from conveyor.server.state import State, state
from conveyor.storage.base import RunFilter

router = APIRouter(prefix="/api/v1/events", tags=["events"])
PARSE_INLINE = 64 * 1024  # bytes of body parsed on the event loop; larger bodies in a thread
StateDep = Annotated[State, Depends(state)]


@router.post(
    "", status_code=202, dependencies=[Depends(intake_key)], response_model=schemas.EventIds,
    responses=schemas.errors(400, 401, 413, 422, 429, 503),
    openapi_extra={"requestBody": schemas.EVENTS_BODY},
    summary="Send one event or a list of events",
    description="Answers 202 with the events' ids once every event of the request is durably stored. "
    "A known id is accepted and ignored (idempotent retries). A list with one invalid event is rejected whole. "
    "A W3C `traceparent` header puts the runs the events start into that trace.",
)
async def send_events(request: Request, st: StateDep) -> JSONResponse:
    body = await request.body()
    cfg = st.config
    parse = functools.partial(parse_events, body, st.engine, max_batch=cfg.max_batch,
                              max_event_bytes=cfg.max_event_bytes, traceparent=request.headers.get("traceparent"))
    # a few events parse in microseconds; a large batch would hold up every other request
    events = parse() if len(body) < PARSE_INLINE else await asyncio.to_thread(parse)
    ids = await st.intake.submit(events)
    return JSONResponse({"ids": ids}, status_code=202)


@router.get("", dependencies=[Depends(api_token)], response_model=schemas.EventPage,
            responses=schemas.errors(400, 401), summary="Recent events, newest first")
async def list_events(
    st: StateDep,
    name: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> dict[str, Any]:
    before = views.parse_event_cursor(cursor)
    rows = await asyncio.to_thread(st.engine.storage.events_list, name, before, limit)
    nxt = views.event_cursor(rows[-1]) if len(rows) == limit else None
    return {"events": [views.event(r) for r in rows], "next": nxt}


@router.get("/{event_id}", dependencies=[Depends(api_token)], response_model=schemas.EventWithRuns,
            responses=schemas.errors(401, 404), summary="One event and the runs it started")
async def get_event(event_id: str, st: StateDep) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        row = st.engine.storage.event_get(event_id)
        if row is None:
            raise NotFound(f"no event with id {event_id!r}")
        runs = st.engine.list_runs(RunFilter(event_id=event_id, limit=500), with_steps=False)
        return {**views.event(row), "runs": [views.run_summary(r) for r in runs]}

    return await asyncio.to_thread(load)
