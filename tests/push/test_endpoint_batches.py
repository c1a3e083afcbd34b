"""A batch of invocations in one request: short ``def`` steps share a thread; slow ones still
run side by side; ``async def`` ones run on the server's loop; answers keep the request's order."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import sqlite_url

import conveyor
from conveyor.executor.inputs import InvocationInput
from conveyor.push.protocol import PushRequest, decode_response, encode_request
from conveyor.push.signing import HEADER, sign
from conveyor.records import Completed
from conveyor.types import Event

from .harness import KEY, served

SIDE_BY_SIDE = 8  # slow steps in one request, all of which must be running at once


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    app = conveyor.Conveyor("batches", database=sqlite_url(tmp_path / "unused.db"))

    # a step that waits on something (I/O): it only returns once all of the request's slow
    # steps are waiting at the same time, which they can only do on threads of their own
    meeting = threading.Barrier(SIDE_BY_SIDE, timeout=30)

    @app.function()
    def slow(ctx: conveyor.Context) -> Any:
        def body() -> str:
            meeting.wait()
            return threading.current_thread().name

        return ctx.step.run("wait", body)

    @app.function()
    def quick(ctx: conveyor.Context) -> Any:
        return ctx.step.run("thread", lambda: [ctx.event.data["i"], threading.current_thread().name])

    @app.function()
    async def coro(ctx: conveyor.Context) -> Any:
        async def body() -> int:
            await asyncio.sleep(0)
            return int(ctx.event.data["i"])

        return await ctx.step.run("await", body)

    with served(app.serve(signing_key=KEY)) as server:
        yield server.url + "/"
    app.close()


def call(url: str, invocations: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    inputs = [InvocationInput(f"run-{i}", fid, Event("x", data, f"e-{i}")) for i, (fid, data) in enumerate(invocations)]
    body = encode_request(PushRequest(inputs, time.time(), None))
    reply = httpx.post(url, content=body, headers={HEADER: sign(body, [KEY], request_id=f"r{time.monotonic_ns()}")},
                       timeout=60)
    assert reply.status_code == 200, reply.text
    results = decode_response(reply.content)
    assert [r.run_id for r in results] == [i.run_id for i in inputs]
    return [r.outcome.output if isinstance(r.outcome, Completed) else r.outcome for r in results]


def test_slow_def_steps_run_side_by_side(endpoint: str) -> None:
    outputs = call(endpoint, [("slow", {})] * SIDE_BY_SIDE)
    # every step passed the barrier (a broken barrier fails the step), so all were in flight at once
    assert all(isinstance(o, str) for o in outputs), outputs
    assert len({json.loads(o) for o in outputs}) == SIDE_BY_SIDE  # each on a thread of its own


def test_short_steps_share_a_thread_and_answers_keep_the_request_order(endpoint: str) -> None:
    mixed = [("quick", {"i": 0}), ("coro", {"i": 1}), ("quick", {"i": 2}), ("coro", {"i": 3}), ("quick", {"i": 4})]
    outputs = call(endpoint, mixed)
    assert outputs[1] == "1" and outputs[3] == "3"
    quick = [json.loads(o) for o in (outputs[0], outputs[2], outputs[4])]
    assert [q[0] for q in quick] == [0, 2, 4]
