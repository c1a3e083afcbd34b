"""``/api/v1/runs`` and ``/api/v1/dead-letters``: inspect runs and act on them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import JSONResponse

from conveyor.errors import InvalidInput
from conveyor.server import schemas, views
from conveyor.server.auth import api_token
from conveyor.server.errors import ApiError
from conveyor.server.state import State, state
from conveyor.storage.base import RunFilter
from conveyor.types import parse_time

log = logging.getLogger("conveyor.server")
router = APIRouter(prefix="/api/v1", tags=["runs"], dependencies=[Depends(api_token)])
StateDep = Annotated[State, Depends(state)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=300, description="the 'next' value of the previous page")]
Id = Annotated[str | None, Query(max_length=300)]
When = Annotated[str | None, Query(max_length=64, description="an age (2h, 7d), Unix seconds, or ISO 8601 (UTC "
                                   "unless it names an offset); since: created at or after, until: created before")]


def _ts(name: str, text: str | None) -> float | None:
    """A time parameter as Unix seconds; a bad one is a 400 that says which and what it takes."""
    if text is None:
        return None
    try:
        return parse_time(text, time.time())
    except ValueError as exc:
        raise ApiError(400, "invalid_query", f"{name}: {exc}") from None


def _page(runs: list[Any], limit: int) -> str | None:
    return runs[-1].id if len(runs) == limit else None


@router.get("/runs", response_model=schemas.RunPage, responses=schemas.errors(400, 401, 422),
            summary="Runs, newest first")
async def list_runs(
    st: StateDep, function: Id = None, status: Id = None, event_id: Id = None, parent_id: Id = None,
    limit: Limit = 50, cursor: Cursor = None, since: When = None, until: When = None,
) -> dict[str, Any]:
    flt = RunFilter(function=function, status=status, event_id=event_id, parent_id=parent_id,
                    before=cursor, limit=limit, since=_ts("since", since), until=_ts("until", until))
    runs = await asyncio.to_thread(st.engine.list_runs, flt, with_steps=False)
    return {"runs": [views.run_summary(r) for r in runs], "next": _page(runs, limit)}


@router.get("/runs/{run_id}", response_model=schemas.RunOut, responses=schemas.errors(401, 404),
            summary="One run with its steps (and its children's progress)")
async def get_run(run_id: str, st: StateDep) -> dict[str, Any]:
    run = await asyncio.to_thread(st.engine.get_run, run_id)
    return views.run_full(run)


@router.get("/runs/{run_id}/logs", response_model=schemas.LogPage, responses=schemas.errors(401, 404),
            summary="The log lines a run wrote through ctx.log")
async def run_logs(run_id: str, st: StateDep) -> dict[str, Any]:
    def load() -> list[dict[str, Any]]:
        st.engine.get_run(run_id)  # 404 for an unknown run
        return st.engine.logs(run_id)

    return {"logs": [views.log_line(r) for r in await asyncio.to_thread(load)]}


@router.post("/runs/{run_id}/cancel", response_model=schemas.RunSummary, responses=schemas.errors(401, 404, 409),
             summary="Cancel a run that has not ended (and its unfinished children)")
async def cancel_run(run_id: str, st: StateDep) -> dict[str, Any]:
    def act() -> dict[str, Any]:
        st.engine.cancel(run_id)
        return views.run_summary(st.engine.get_run(run_id))

    return await asyncio.to_thread(act)


@router.post("/runs/{run_id}/replay", response_model=schemas.RunSummary, responses=schemas.errors(401, 404, 409),
             summary="Re-run a failed or cancelled run from where it stopped, keeping finished steps")
async def replay_run(run_id: str, st: StateDep) -> dict[str, Any]:
    def act() -> dict[str, Any]:
        st.engine.replay(run_id)
        return views.run_summary(st.engine.get_run(run_id))

    return await asyncio.to_thread(act)


@router.get("/dead-letters", response_model=schemas.DeadLetterPage, responses=schemas.errors(400, 401),
            tags=["dead letters"], summary="Failed runs, newest first")
async def dead_letters(st: StateDep, function: Id = None, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    flt = RunFilter(function=function, status="failed", before=cursor, limit=limit)
    runs = await asyncio.to_thread(st.engine.list_runs, flt, with_steps=False)
    return {"dead_letters": [views.run_summary(r) for r in runs], "next": _page(runs, limit)}


@router.post(
    "/dead-letters/redrive", status_code=202, response_model=schemas.RedriveOut,
    responses=schemas.errors(400, 401, 404, 409, 422),
    tags=["dead letters"], summary="Send dead letters back to the queue",
    description="All of them (no body), the given run_ids, or every dead letter of one function; runs continue "
    "from their failed step. Without a rate, up to 1,000 are redriven before the answer and any more right after "
    "it, in the background; with a rate, all in the background at that many per second. Background redrives "
    "belong to this server process: a restart stops them (redrive again: runs already redriven are skipped).",
)
async def redrive(st: StateDep, body: Annotated[schemas.RedriveIn | None, Body()] = None) -> JSONResponse:
    body = body or schemas.RedriveIn()
    engine = st.engine
    if body.run_ids is not None and body.function is not None:
        raise InvalidInput("give run_ids or function, not both")
    if body.rate is None and body.run_ids is not None:
        done = await asyncio.to_thread(engine.redrive, body.run_ids)  # at most 10,000 (RedriveIn)
        return _redrive_answer(done, [])
    if body.run_ids is not None:
        await asyncio.to_thread(engine.check_dead_letters, body.run_ids)
    ids = body.run_ids if body.run_ids is not None else await asyncio.to_thread(engine.dead_letter_ids, body.function)
    done, later = [], list(ids)
    if body.rate is None:  # the first ones now; a million would not fit in one request
        done = await asyncio.to_thread(engine.redrive_any, later[:REDRIVE_NOW])
        later = later[REDRIVE_NOW:]
    if later:
        task = asyncio.create_task(_redrive_at(st, later, body.rate))
        st.background.add(task)
        task.add_done_callback(st.background.discard)
    return _redrive_answer(done, later)


REDRIVE_NOW = 1000  # dead letters redriven before the answer; the rest right after, in the background
LISTED = 10_000  # run ids an answer lists at most (the counts are exact)


def _redrive_answer(done: list[str], later: list[str]) -> JSONResponse:
    listed = (done + later)[:LISTED]
    return JSONResponse({"redriven": len(done), "scheduled": len(later), "run_ids": listed}, status_code=202)


async def _redrive_at(st: State, ids: list[str], rate: float | None) -> None:
    """Redrive ``ids`` at ``rate`` per second (None: as fast as the database takes them), in
    slices; runs no longer failed are skipped."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    if rate is None:
        rate, chunk = float("inf"), 500
    else:
        chunk = max(1, min(500, int(rate / 10) or 1))
    done = 0
    try:
        for i in range(0, len(ids), chunk):
            due = start + i / rate
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            done += len(await asyncio.to_thread(st.engine.redrive_any, ids[i:i + chunk]))
    except Exception:
        log.exception("redriving dead letters stopped after %d of %d", done, len(ids))
    else:
        pace = "" if rate == float("inf") else f" at {rate:.3g}/s"
        log.info("redrove %d of %d dead letters%s", done, len(ids), pace)
