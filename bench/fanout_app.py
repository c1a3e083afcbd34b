"""The fan-out benchmark application, loaded by the worker processes that ``bench/fanout.py`` starts.

    conveyor worker bench/fanout_app.py:app --database URL --pool background --concurrency 32

The database comes from ``CONVEYOR_DATABASE_URL`` (or ``--database``). Functions:

* ``fan-parent`` (pool ``default``) on ``fan.start``: ``data = {"n": N, "kind": "noop"|"tiny"}``.
  ``results = ctx.step.map("kids", <child>, range(N))`` then a ``reduce`` step that
  streams over ``results`` (never a list of them) and returns the sum, the count, its
  own duration and the worker's memory (VmRSS before / VmHWM after, KiB).
* ``fan-noop`` (pool ``background``): returns its item (an int).
* ``fan-tiny`` (pool ``background``): ~300 floating-point operations on its item,
  returns a float.
* ``fan-live`` (pool ``live``) on ``fan.live``: one step whose body records
  ``time.time()`` the moment it starts (as ``bench-latency`` in ``apps.py``) and returns
  it with ``started - event.data["t0"]``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from conveyor import Context, Conveyor

app = Conveyor("fanout-bench", database=os.environ.get("CONVEYOR_DATABASE_URL"))

TINY_ROUNDS = 100  # 3 float ops a round: ~300 floating-point operations per child


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@app.function(id="fan-noop", pool="background", retries=0)
def fan_noop(ctx: Context) -> Any:
    return ctx.event.data


@app.function(id="fan-tiny", pool="background", retries=0)
def fan_tiny(ctx: Context) -> float:
    x = float(ctx.event.data)
    acc = 0.0
    for _ in range(TINY_ROUNDS):
        x = x * 1.000001 + 0.5
        acc += x
    return round(acc, 3)


CHILDREN = {"noop": fan_noop, "tiny": fan_tiny}


def reduce(results: Any) -> dict[str, Any]:
    """Stream over the map results (lazy, paged from storage): bounded memory."""
    rss0 = _proc_status_kib("VmRSS:")
    t = time.time()
    total = 0.0
    count = 0
    for value in results:
        total += value
        count += 1
    return {
        "sum": total,
        "count": count,
        "started": t,
        "seconds": time.time() - t,
        "rss_before_kib": rss0,
        "rss_after_kib": _proc_status_kib("VmRSS:"),
        "hwm_after_kib": _proc_status_kib("VmHWM:"),
    }


@app.function(id="fan-parent", on="fan.start", pool="default", retries=0)
def fan_parent(ctx: Context) -> Any:
    child = CHILDREN[ctx.event.data.get("kind", "noop")]
    results = ctx.step.map("kids", child, range(int(ctx.event.data["n"])))
    return ctx.step.run("reduce", reduce, results)


def stamp(t0: float) -> dict[str, float]:
    started = time.time()  # first thing the step body does
    return {"started": started, "latency": started - t0}


@app.function(id="fan-live", on="fan.live", pool="live", retries=0)
def fan_live(ctx: Context) -> Any:
    return ctx.step.run("stamp", stamp, ctx.event.data["t0"])
