"""The shapes the API answers with, for the OpenAPI document (routes build plain dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 256, "description": "the event name"},
        "data": {"type": "object", "description": "a JSON object (default {})"},
        "id": {"type": "string", "minLength": 1, "maxLength": 256,
               "description": "idempotency key: an event with a known id is accepted and ignored"},
    },
}
EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        EVENT_SCHEMA,
        {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": 1000},
    ]}}},
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class EventIds(BaseModel):
    ids: list[str]


class Step(BaseModel):
    id: str
    kind: str
    status: str
    attempts: int
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    ended_at: str | None = None
    wake_at: str | None = None


class ProgressOut(BaseModel):
    total: int
    queued: int
    running: int
    waiting: int
    completed: int
    failed: int
    cancelled: int
    started_at: str | None = None
    rate: float
    eta: float | None = None


class RunSummary(BaseModel):
    id: str
    function_id: str
    event_id: str
    status: str = Field(description="queued, running, waiting, completed, failed or cancelled")
    pool: str
    parent_id: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class RunOut(RunSummary):
    steps: list[Step]
    progress: ProgressOut | None = None


class RunPage(BaseModel):
    runs: list[RunSummary]
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class DeadLetterPage(BaseModel):
    dead_letters: list[RunSummary]
    next: str | None


class EventOut(BaseModel):
    id: str
    name: str
    data: Any
    ts: str


class EventWithRuns(EventOut):
    runs: list[RunSummary]


class EventPage(BaseModel):
    events: list[EventOut]
    next: str | None


class LogLine(BaseModel):
    step_id: str | None
    attempt: int
    ts: str
    level: str
    message: str


class LogPage(BaseModel):
    logs: list[LogLine]


class FunctionOut(BaseModel):
    id: str
    pool: str
    triggers: list[str]
    cron: str | None
    retries: int
    concurrency: int | None
    concurrency_key: str | None
    has_on_failure: bool
    updated_at: str


class FunctionList(BaseModel):
    functions: list[FunctionOut]


class RedriveIn(BaseModel):
    model_config = {"extra": "forbid"}

    run_ids: list[str] | None = Field(default=None, max_length=10_000, description="these dead letters")
    function: str | None = Field(default=None, description="every dead letter of this function")
    rate: float | None = Field(default=None, gt=0, le=100_000, description="redrives per second (background)")


class RedriveOut(BaseModel):
    redriven: int = Field(description="dead letters sent back to the queue before this answer")
    scheduled: int = Field(description="dead letters being redriven in the background (at the rate, if given)")
    run_ids: list[str] = Field(description="the runs redriven now, then those scheduled (the first 10,000)")


class Health(BaseModel):
    status: str
    database: str


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all with the error body."""
    return {s: {"model": ErrorBody} for s in statuses}
