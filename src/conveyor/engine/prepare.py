"""What an invocation needs, in two halves that may run on two machines.

:func:`invocation_input` is the database's half: the event the function sees (for an
``on_failure`` handler, the failed run's original event and its error), the memo with
large outputs resolved, and the database clock. :func:`build_invocation` is the code's
half: the function from a registry, bound to that input. A pull worker does both in one
process (``Engine.prepare``); with push delivery the server's dispatcher computes the
input, sends it over HTTP, and the endpoint that holds the code builds the invocation.
"""

from __future__ import annotations

import time
from typing import Any

from conveyor.engine.registry import Registry
from conveyor.errors import StepError
from conveyor.executor import codec
from conveyor.executor.inputs import InvocationInput
from conveyor.executor.invocation import Invocation, Sink, StorageView
from conveyor.ids import new_id
from conveyor.records import Failed
from conveyor.storage.base import ClaimedJob, Storage
from conveyor.storage.blobs import BlobStore
from conveyor.types import Backoff, Event, utc_from_ts

__all__ = ["InvocationInput", "build_invocation", "invocation_input", "unknown_function"]


def invocation_input(job: ClaimedJob, storage: Storage, blobs: BlobStore) -> InvocationInput:
    """The input of the invocation that advances ``job`` (reads the database only for an
    ``on_failure`` handler's original event, and the blob store for large memo outputs)."""
    data = codec.loads(job.event_data)
    event = Event(name=job.event_name, data=data, id=job.event_id, ts=utc_from_ts(job.event_ts))
    failure = None
    if job.failure_of is not None and isinstance(data, dict):
        original = storage.event_get(data.get("event_id", ""))
        if original is not None:
            event = Event(original.name, codec.loads(original.data), original.id, utc_from_ts(original.ts))
        failure = data.get("error") or {}
    for m in job.memo.values():
        m.output = blobs.resolve(m.output)
    return InvocationInput(job.run_id, job.function_id, event, job.memo, failure, job.skew, job.trace)


def build_invocation(
    registry: Registry,
    inp: InvocationInput,
    sink: Sink,
    *,
    backoff: Backoff,
    budget: float,
    view: StorageView | None,
    yield_after_write: bool = False,
) -> Invocation | Failed:
    """The invocation of ``inp`` with the registry's code, or a failure if the function is unknown."""
    definition = registry.get(inp.function_id)
    if definition is None:
        return unknown_function(inp.function_id)
    extra: tuple[Any, ...] = ()
    if inp.failure is not None:
        extra = (StepError.from_dict(inp.failure),)
    skew = inp.skew  # timers run on the database's clock
    return Invocation(
        fn=definition.fn, function_id=inp.function_id, run_id=inp.run_id, event=inp.event,
        clock=(lambda: time.time() + skew) if skew else time.time,
        memo=inp.memo, retries=definition.spec.retries, backoff=definition.backoff or backoff,
        sink=sink, new_id=new_id, budget=budget, extra_args=extra,
        view=view, known_functions=registry.known(), yield_after_write=yield_after_write, trace=inp.trace,
    )


def unknown_function(function_id: str) -> Failed:
    return Failed({
        "step_id": None, "type": "NotFound",
        "message": f"function {function_id!r} is not registered in this worker's app",
    })
