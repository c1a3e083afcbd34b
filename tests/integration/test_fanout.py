"""``ctx.step.map``: fan-out to child runs, exactly-once fan-in, failures, and the results sequence.

Every test runs on every backend (``[sqlite]``, ``[postgres]``).
"""

from __future__ import annotations

import threading

import pytest
from tests.conftest import wait_until

import conveyor
from conveyor import NonRetriableError, StepError

from .helpers import only_run, step

ACTIVE = ("queued", "running", "waiting")


def _all_runs(app) -> list:
    return app.list_runs(limit=100_000)


def _active(app) -> list:
    return [r for r in _all_runs(app) if r.status in ACTIVE]


# ---- 1. exactly-once fan-in under a race -------------------------------------------------------

N_RACE = 200
WAVE = 50  # children released together; two workers of WAVE // 2 slots each hold exactly one wave


def test_fan_in_exactly_once_when_many_children_end_at_the_same_instant(app, start_worker, tally) -> None:
    """200 children end in 4 waves of 50 that leave a barrier together (the last wave is
    the race for "who is the last child"); the reduce after the map runs once and sees
    every output once, in item order."""
    barrier = threading.Barrier(WAVE, timeout=30)

    @app.function(retries=0)
    def held_double(ctx):
        n = ctx.event.data["n"]
        tally.hit("child", n)
        barrier.wait()  # every slot of both workers holds a child: they all return at once
        return n * 2

    @app.function(on="race.start", retries=0)
    def race_parent(ctx):
        results = ctx.step.map("doubles", held_double, [{"n": n} for n in range(N_RACE)])
        tally.hit("after-map")

        def reduce(outputs):
            tally.hit("reduce", list(outputs))
            return {"count": len(outputs), "sum": sum(outputs)}

        return ctx.step.run("reduce", reduce, results)

    try:
        start_worker(app, concurrency=WAVE // 2)
        start_worker(app, concurrency=WAVE // 2)
        event_id = app.send("race.start")
        run = _wait_run_ended(app, event_id, timeout=60)
    finally:
        barrier.abort()  # never leave worker threads blocked if the test failed early

    assert run.status == "completed", run
    assert tally["reduce"] == 1, f"the reduce body ran {tally['reduce']} times"
    (seen,) = tally.values("reduce")
    assert seen == [n * 2 for n in range(N_RACE)], "the reduce did not see every output once, in item order"
    assert run.output == {"count": N_RACE, "sum": sum(n * 2 for n in range(N_RACE))}
    assert tally["after-map"] == 1, f"the parent was resumed past its map {tally['after-map']} times"
    assert sorted(tally.values("child")) == list(range(N_RACE)), "a child ran twice or not at all"
    record = step(run, "doubles")
    assert record.kind == "map"
    assert record.status == "completed"
    children = app.list_runs(function="held-double", limit=10_000)
    assert len(children) == N_RACE
    assert {c.status for c in children} == {"completed"}
    assert {c.parent_id for c in children} == {run.id}
    assert run.progress.total == N_RACE
    assert run.progress.completed == N_RACE
    assert _active(app) == []


def _wait_run_ended(app, event_id: str, timeout: float):
    def ended():
        runs = app.runs_for_event(event_id)
        return runs and runs[0].status in ("completed", "failed", "cancelled") and app.get_run(runs[0].id)

    def state() -> str:
        runs = app.runs_for_event(event_id)
        if not runs:
            return "the run to start: none yet"
        run = app.get_run(runs[0].id)
        return f"the run to end: {run.status}, progress {run.progress}"

    return wait_until(ended, timeout=timeout, message=state)


def test_parent_waits_for_its_last_child(app, start_worker, tally) -> None:
    """One straggler is held after every other child ended: the parent must not resume
    (nor its reduce run) until the straggler ends too."""
    gate = threading.Event()
    n_items, straggler = 30, 17

    @app.function(retries=0)
    def maybe_slow(ctx):
        n = ctx.event.data["n"]
        if n == straggler:
            assert gate.wait(30), "the test never released the straggler"
        return n

    @app.function(on="straggler.start", retries=0)
    def patient_parent(ctx):
        results = ctx.step.map("fan", maybe_slow, [{"n": n} for n in range(n_items)])
        return ctx.step.run("reduce", lambda res: tally.hit("reduce", list(res)) and list(res), results)

    try:
        start_worker(app, concurrency=8)
        event_id = app.send("straggler.start")
        wait_until(
            lambda: len(app.list_runs(function="maybe-slow", status="completed", limit=1000)) == n_items - 1,
            timeout=20,
            message="every child but the straggler to complete",
        )
        (parent,) = app.runs_for_event(event_id)
        held = app.get_run(parent.id)
        assert held.status == "waiting", f"the parent resumed before its last child ended: {held}"
        assert step(held, "fan").status == "waiting"
        assert held.progress.completed == n_items - 1
        assert held.progress.running == 1
        assert tally["reduce"] == 0
    finally:
        gate.set()
    run = _wait_run_ended(app, event_id, timeout=20)
    assert run.status == "completed", run
    assert run.output == list(range(n_items))
    assert tally.values("reduce") == [list(range(n_items))]


# ---- 3. a child that fails for good ------------------------------------------------------------

N_FAIL = 20
BAD = (3, 11, 17)


def _failing_child(app, tally):
    @app.function(retries=1)
    def maybe_fail(ctx):
        n = ctx.event.data["n"]

        def work():
            tally.hit("child-attempt", n)
            if n in BAD:
                raise ValueError(f"bad item {n}")
            return n * 10

        return ctx.step.run("work", work)  # a step: its retries apply

    return maybe_fail


def test_failed_child_fails_the_parent_after_all_children_end(app, tally) -> None:
    maybe_fail = _failing_child(app, tally)

    @app.function(on="fail.start", retries=2)
    def fragile_parent(ctx):
        tally.hit("parent-body")
        results = ctx.step.map("items", maybe_fail, [{"n": n} for n in range(N_FAIL)])
        ctx.step.run("reduce", lambda: tally.hit("reduce"))
        return len(results)

    @fragile_parent.on_failure
    def on_fragile_failure(ctx, error):
        tally.hit("on-failure", error)

    event_id = app.send("fail.start")
    app.drain(timeout=30)

    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert run.error["type"] == "MapFailed", run.error
    assert f"{len(BAD)} of {N_FAIL}" in run.error["message"], run.error
    assert "bad item" in run.error["message"], "the message names the first errors"
    record = step(run, "items")
    assert record.kind == "map"
    assert record.status == "failed"
    assert tally["reduce"] == 0
    assert tally["on-failure"] == 1, f"on_failure ran {tally['on-failure']} times"
    (error,) = tally.values("on-failure")
    assert isinstance(error, StepError | Exception)
    if isinstance(error, StepError):
        assert error.error_type == "MapFailed"

    # every child ended before the parent failed: 17 completed, 3 failed after 2 attempts each
    children = app.list_runs(function="maybe-fail", limit=1000)
    assert len(children) == N_FAIL
    by_status = {s: sorted(c.id for c in children if c.status == s) for s in ("completed", "failed")}
    assert len(by_status["completed"]) == N_FAIL - len(BAD)
    assert len(by_status["failed"]) == len(BAD)
    attempts = tally.values("child-attempt")
    assert sorted(n for n in attempts if n in BAD) == sorted(list(BAD) * 2), "1 + retries attempts per bad child"
    assert run.progress.total == N_FAIL
    assert run.progress.failed == len(BAD)
    assert run.progress.completed == N_FAIL - len(BAD)
    # nothing of the tree (nor the failure handler) stays queued, running or waiting
    assert _active(app) == []
    assert run.id in {r.id for r in app.dead_letters()}
    # no second fan-out: the parent's retries do not re-run a map that failed for good
    assert len(app.list_runs(function="maybe-fail", limit=1000)) == N_FAIL


def test_failed_child_raises_map_failed_into_the_parent(app, tally) -> None:
    maybe_fail = _failing_child(app, tally)

    @app.function(on="fail.catch", retries=0)
    def catching_parent(ctx):
        try:
            ctx.step.map("items", maybe_fail, [{"n": n} for n in range(N_FAIL)])
        except StepError as err:
            return {"type": err.error_type, "step": err.step_id, "message": err.message}
        return "no error"

    event_id = app.send("fail.catch")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output["type"] == "MapFailed"
    assert run.output["step"] == "items"
    assert f"{len(BAD)} of {N_FAIL} child runs failed" in run.output["message"]
    assert "bad item 3" in run.output["message"], "the first error is named"
    statuses = [c.status for c in app.list_runs(function="maybe-fail", limit=1000)]
    assert sorted(statuses).count("failed") == len(BAD)
    assert len(statuses) == N_FAIL
    assert _active(app) == []


def test_allow_failures_returns_none_at_failed_indexes(app, tally) -> None:
    maybe_fail = _failing_child(app, tally)

    @app.function(on="fail.allowed", retries=0)
    def tolerant_parent(ctx):
        results = ctx.step.map("items", maybe_fail, [{"n": n} for n in range(N_FAIL)], allow_failures=True)
        failures = results.failures()
        summary = ctx.step.run("reduce", lambda res: list(res), results)
        return {
            "outputs": summary,
            "failed": [index for index, _ in failures],
            "errors": [error for _, error in failures],
        }

    @tolerant_parent.on_failure
    def tolerant_failed(ctx, error):
        tally.hit("on-failure")

    event_id = app.send("fail.allowed")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output["outputs"] == [None if n in BAD else n * 10 for n in range(N_FAIL)]
    assert run.output["failed"] == list(BAD)
    for n, error in zip(BAD, run.output["errors"], strict=True):
        assert isinstance(error, dict)
        assert f"bad item {n}" in " ".join(str(v) for v in error.values()), error
    assert tally["on-failure"] == 0
    assert step(run, "items").kind == "map"  # its status (completed/failed) is not specified with allow_failures
    assert run.progress.failed == len(BAD)
    assert _active(app) == []


# ---- 4. items, results sequence, parent_id, unknown function -----------------------------------


def test_map_over_a_generator(app, tally) -> None:
    @app.function()
    def triple(ctx):
        return ctx.event.data["n"] * 3

    @app.function(on="gen.start")
    def gen_parent(ctx):
        def items():
            for n in range(ctx.event.data["count"]):
                tally.hit("yielded")
                yield {"n": n}

        results = ctx.step.map("triples", triple, items())
        return ctx.step.run("collect", lambda res: list(res), results)

    event_id = app.send("gen.start", {"count": 37})
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == [n * 3 for n in range(37)]
    assert len(app.list_runs(function="triple", limit=1000)) == 37


def test_map_over_zero_items_returns_an_empty_sequence(app, tally) -> None:
    @app.function()
    def never_called(ctx):
        tally.hit("child")
        return 1

    @app.function(on="empty.start")
    def empty_parent(ctx):
        results = ctx.step.map("nothing", never_called, [])
        tally.hit("after-map")
        shape = {"len": len(results), "list": list(results), "slice": list(results[0:5])}
        with_step = ctx.step.run("reduce", lambda res: {"n": len(res), "items": list(res)}, results)
        return {**shape, "step": with_step}

    event_id = app.send("empty.start")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == {"len": 0, "list": [], "slice": [], "step": {"n": 0, "items": []}}
    assert tally["child"] == 0
    assert app.list_runs(function="never-called") == []
    assert step(run, "nothing").status == "completed"
    assert _active(app) == []


def test_results_sequence_supports_len_index_slice_iteration_and_later_steps(app) -> None:
    n_items = 25

    @app.function()
    def square(ctx):
        return {"n": ctx.event.data["n"], "sq": ctx.event.data["n"] ** 2}

    @app.function(on="seq.start")
    def seq_parent(ctx):
        results = ctx.step.map("squares", square, ({"n": n} for n in range(n_items)))
        view = {
            "len": len(results),
            "first": results[0],
            "last": results[-1],
            "middle": results[10],
            "slice": list(results[3:6]),
            "stride": list(results[::10]),
            "iter": [r["sq"] for r in results],
            "again": sum(1 for _ in results),  # iterable more than once
            "contains": {"n": 4, "sq": 16} in results,
        }
        try:
            results[n_items]
        except IndexError:
            view["index-error"] = True
        passed = ctx.step.run("total", lambda res: sum(r["sq"] for r in res), results)
        return {**view, "total": passed}

    event_id = app.send("seq.start")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    out = run.output
    assert out["len"] == n_items
    assert out["first"] == {"n": 0, "sq": 0}
    assert out["last"] == {"n": 24, "sq": 576}
    assert out["middle"] == {"n": 10, "sq": 100}
    assert out["slice"] == [{"n": n, "sq": n * n} for n in (3, 4, 5)]
    assert out["stride"] == [{"n": n, "sq": n * n} for n in (0, 10, 20)]
    assert out["iter"] == [n * n for n in range(n_items)]
    assert out["again"] == n_items
    assert out["contains"] is True
    assert out["index-error"] is True
    assert out["total"] == sum(n * n for n in range(n_items))


def test_map_results_can_be_returned_as_the_run_output(app) -> None:
    @app.function()
    async def negate(ctx):
        return -ctx.event.data["n"]

    @app.function(on="seq.return")
    async def returning_parent(ctx):
        return await ctx.step.map("negs", negate, [{"n": n} for n in range(5)])

    event_id = app.send("seq.return")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == [0, -1, -2, -3, -4]


def test_children_carry_parent_id_function_and_item(app) -> None:
    @app.function()
    def echo_item(ctx):
        return {"data": ctx.event.data, "name": ctx.event.name}

    @app.function(on="tree.start")
    def tree_parent(ctx):
        return list(ctx.step.map("echo", echo_item, [{"n": n, "tag": f"t{n}"} for n in range(4)]))

    event_id = app.send("tree.start")
    app.drain(timeout=20)
    parent = only_run(app, event_id)
    assert parent.status == "completed", parent
    assert [o["data"] for o in parent.output] == [{"n": n, "tag": f"t{n}"} for n in range(4)]
    children = app.list_runs(function="echo-item")
    assert len(children) == 4
    for child in children:
        full = app.get_run(child.id)
        assert full.parent_id == parent.id
        assert full.function_id == "echo-item"
        assert full.progress is None, "a run without children has no progress"
    assert parent.parent_id is None


def test_unknown_mapped_function_raises_step_error(app, tally) -> None:
    @app.function(on="unknown.map", retries=0)
    def bad_mapper(ctx):
        try:
            ctx.step.map("fan", "no-such-function", [{"n": 1}, {"n": 2}])
        except conveyor.StepError as err:
            tally.hit("caught", err)
            return {"type": err.error_type, "step": err.step_id, "message": err.message}
        return "no error"

    event_id = app.send("unknown.map")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output["step"] == "fan"
    assert "no-such-function" in run.output["message"]
    assert run.output["type"]
    assert isinstance(tally.values("caught")[0], conveyor.StepError)
    assert step(run, "fan").status == "failed"
    assert [r.function_id for r in _all_runs(app)] == ["bad-mapper"], "no child run was created"


def test_unknown_mapped_function_fails_the_run_when_uncaught(app) -> None:
    @app.function(on="unknown.uncaught", retries=0)
    def careless_mapper(ctx):
        return ctx.step.map("fan", "no-such-function", [{"n": 1}])

    event_id = app.send("unknown.uncaught")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert "no-such-function" in run.error["message"]
    assert _active(app) == []


@pytest.mark.parametrize("bad_items", [None, 42], ids=["none", "int"])
def test_map_over_a_non_iterable_fails_clearly(app, bad_items) -> None:
    @app.function()
    def unused_child(ctx):
        return 1

    @app.function(on="bad.items", retries=0)
    def non_iterable(ctx):
        return ctx.step.map("fan", unused_child, bad_items)

    event_id = app.send("bad.items")
    app.drain(timeout=20)
    run = only_run(app, event_id)
    assert run.status == "failed", run
    assert "iterable" in run.error["message"].lower()
    assert app.list_runs(function="unused-child") == []


def test_child_retries_then_completes_inside_a_map(app, tally) -> None:
    @app.function(retries=2)
    def flaky(ctx):
        n = ctx.event.data["n"]

        def work():
            if tally.hit(f"try-{n}") == 1 and n % 2 == 0:
                raise RuntimeError("first attempt fails")
            return n

        return ctx.step.run("work", work)

    @app.function(on="flaky.map", retries=0)
    def flaky_parent(ctx):
        return ctx.step.run("sum", lambda res: list(res), ctx.step.map("fan", flaky, [{"n": n} for n in range(6)]))

    event_id = app.send("flaky.map")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == list(range(6))
    assert [tally[f"try-{n}"] for n in range(6)] == [2, 1, 2, 1, 2, 1]


def test_non_retriable_child_counts_as_failed(app) -> None:
    @app.function(retries=5)
    def refuses(ctx):
        def work():
            if ctx.event.data["n"] == 1:
                raise NonRetriableError("refused for good")
            return ctx.event.data["n"]

        return ctx.step.run("work", work)

    @app.function(on="refuse.map", retries=0)
    def refusing_parent(ctx):
        results = ctx.step.map("fan", refuses, [{"n": n} for n in range(3)], allow_failures=True)
        return {"outputs": list(results), "failed": [i for i, _ in results.failures()]}

    event_id = app.send("refuse.map")
    app.drain(timeout=30)
    run = only_run(app, event_id)
    assert run.status == "completed", run
    assert run.output == {"outputs": [0, None, 2], "failed": [1]}
