"""``drain``: run every due job in the calling thread; for tests and scripts."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.executor.invocation import Invocation, InvocationResult
from conveyor.ids import new_id
from conveyor.records import StepWrite
from conveyor.storage.base import JobResult


def _run(inv: Invocation) -> InvocationResult:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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
                writes: list[StepWrite] = []
                prepared = engine.prepare(job, writes.append)
                if isinstance(prepared, JobResult):
                    results.append(prepared)
                    continue
                res = engine.result_of(job, _run(prepared))
                res.steps[:0] = writes
                results.append(res)
            engine.commit(results)
            count += len(jobs)
            continue
        due = engine.next_due(pools)
        now = time.time()
        if due is None or due > deadline:
            engine.storage.notify()
            return count
        time.sleep(min(max(0.0, due - now), max(0.0, deadline - now), 0.25))
