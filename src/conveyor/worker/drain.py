"""``drain``: run every due job in the calling thread; for tests and scripts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.executor.invocation import Invocation, InvocationResult
from conveyor.executor.ops import LeaseLost
from conveyor.ids import new_id
from conveyor.records import StepWrite
from conveyor.storage.base import ClaimedJob, JobResult


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(inv: Invocation) -> InvocationResult:
    if not _in_event_loop():  # (not inside the except block: user tracebacks stay clean)
        return inv.run()
    box: dict[str, Any] = {}  # called from inside an event loop: run it on a thread of its own

    def target() -> None:
        try:
            box["result"] = inv.run()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    result: InvocationResult = box["result"]
    return result


class _Verdict:
    __slots__ = ("ok",)

    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def result(self, timeout: float | None = None) -> bool:
        return self.ok


def _committing_sink(engine: Engine, job: ClaimedJob) -> Callable[[StepWrite], _Verdict]:
    """Checkpoint each step in its own transaction, as it happens."""

    def sink(write: StepWrite) -> _Verdict:
        return _Verdict(engine.commit([JobResult(job.run_id, job.token, job.function_id, steps=[write])])[0])

    return sink


def drain(engine: Engine, timeout: float = 30.0, batch: int = 64) -> int:
    """Run jobs until none is due before ``timeout`` seconds from now; returns the invocations run.

    Retries and sleeps that fall due within the timeout are waited for and run too.
    """
    deadline = time.time() + timeout
    name = f"drain:{new_id()[-8:]}"
    count = 0
    while True:
        pools = engine.registry.pools()
        jobs = engine.claim(name, pools, batch, lease=max(engine.lease, timeout))
        if jobs:
            results: list[JobResult] = []
            for job in jobs:
                prepared = engine.prepare(job, _committing_sink(engine, job))
                if isinstance(prepared, JobResult):
                    results.append(prepared)
                    continue
                try:
                    results.append(engine.result_of(job, _run(prepared)))
                except LeaseLost:
                    continue
            engine.commit(results)
            count += len(jobs)
            continue
        due = engine.next_due(pools)
        now = time.time()
        if due is None or due > deadline:
            engine.storage.notify()
            return count
        time.sleep(min(max(0.0, due - now), max(0.0, deadline - now), 0.25))
