"""The executor in push mode (``yield_after_write``): at most one new step body per invocation.

A push endpoint answers one HTTP request per invocation; if the answer is lost, everything
the invocation did runs again, so it must never hold more than one step's work. The
function's ``return`` right after that step is still part of it: a one-step function is
one request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.executor.fanout import BATCH
from conveyor.executor.invocation import Invocation, InvocationResult
from conveyor.records import Completed, MemoStep, StepWrite, Suspended
from conveyor.types import Backoff, Event


def run_once(fn: Any, memo: dict[str, MemoStep], calls: list[str], *, now: float = 1000.0) -> InvocationResult:
    """One push-mode invocation; its writes are appended to the memo (as the dispatcher commits them)."""
    writes: list[StepWrite] = []
    inv = Invocation(
        fn=fn, function_id="f", run_id="r1", event=Event("e", {"n": 3}, "ev1"), memo=dict(memo), retries=2,
        backoff=Backoff(base=1, cap=8, jitter=0), sink=writes.append, new_id=lambda: "child",
        clock=lambda: now, yield_after_write=True, known_functions=frozenset({"child-fn"}),
    )
    result = inv.run()
    if result.final_write is not None:
        writes.append(result.final_write)
    for w in writes:
        memo[w.id] = MemoStep(w.id, w.kind, w.status, w.attempts, w.output, w.error, w.wake_at, w.seq,
                              w.started_at, w.children_total, w.children_created)
    calls.append(f"{len(writes)} writes")
    return result


def three_steps(calls: list[str]) -> Any:
    def fn(ctx: Any) -> int:
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        b = ctx.step.run("b", lambda: calls.append("b") or a + 1)
        c = ctx.step.run("c", lambda: calls.append("c") or b + 1)
        return c * 10

    return fn


def test_a_one_step_function_completes_in_one_invocation() -> None:
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}
    result = run_once(lambda ctx: ctx.step.run("only", lambda: calls.append("body") or 7), memo, calls)
    assert result.outcome == Completed("7")
    assert calls == ["body", "1 writes"]


def test_each_invocation_runs_one_new_step_body_then_yields() -> None:
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}
    fn = three_steps(calls)
    first = run_once(fn, memo, calls)
    assert first.outcome == Suspended(1000.0, "yield")
    second = run_once(fn, memo, calls)
    assert second.outcome == Suspended(1000.0, "yield")
    third = run_once(fn, memo, calls)
    assert third.outcome == Completed("30")
    assert calls == ["a", "1 writes", "b", "1 writes", "c", "1 writes"]
    assert [memo[s].output for s in "abc"] == ["1", "2", "3"]


def test_async_functions_yield_the_same_way() -> None:
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}

    async def body(name: str, value: int) -> int:
        await asyncio.sleep(0)
        calls.append(name)
        return value

    async def fn(ctx: Any) -> int:
        a = await ctx.step.run("a", body, "a", 1)
        b = await ctx.step.run("b", body, "b", a + 1)
        return int(b)

    assert run_once(fn, memo, calls).outcome == Suspended(1000.0, "yield")
    assert run_once(fn, memo, calls).outcome == Completed("2")
    assert calls == ["a", "1 writes", "b", "1 writes"]


def test_steps_without_a_body_after_a_write_still_checkpoint_in_the_same_invocation() -> None:
    """A sleep after a step suspends at once (no user code ran after the write): one request."""
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}

    def fn(ctx: Any) -> str:
        ctx.step.run("a", lambda: calls.append("a"))
        ctx.step.sleep("nap", 60)
        return "done"

    result = run_once(fn, memo, calls)
    assert result.outcome == Suspended(1060.0, "sleep")
    assert calls == ["a", "2 writes"] and memo["nap"].status == "sleeping"
    assert run_once(fn, memo, calls, now=1061.0).outcome == Completed('"done"')


def test_a_failed_attempt_is_the_invocations_only_write() -> None:
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}

    def fn(ctx: Any) -> None:
        ctx.step.run("ok", lambda: calls.append("ok"))
        ctx.step.run("boom", lambda: 1 / 0)

    assert run_once(fn, memo, calls).outcome == Suspended(1000.0, "yield")
    assert run_once(fn, memo, calls).outcome == Suspended(1001.0, "retry")
    assert memo["boom"].status == "retrying" and memo["boom"].attempts == 1
    assert calls == ["ok", "1 writes", "1 writes"]


def test_a_large_map_creates_one_batch_of_children_per_invocation() -> None:
    calls: list[str] = []
    memo: dict[str, MemoStep] = {}
    n = 2 * BATCH + 5

    def fn(ctx: Any) -> Any:
        return ctx.step.map("fan", "child-fn", range(n))

    outcomes = [run_once(fn, memo, calls).outcome for _ in range(3)]
    assert outcomes == [Suspended(1000.0, "yield"), Suspended(1000.0, "yield"), Suspended(None, "map")]
    assert calls == ["1 writes"] * 3
    assert memo["fan"].status == "waiting" and memo["fan"].children_total == n


@pytest.mark.parametrize("push", [False, True])
def test_pull_mode_is_unchanged(push: bool) -> None:
    """Without the flag, the same function runs all three steps in one invocation."""
    calls: list[str] = []
    writes: list[StepWrite] = []
    inv = Invocation(
        fn=three_steps(calls), function_id="f", run_id="r1", event=Event("e", {}, "ev1"), memo={}, retries=0,
        backoff=Backoff(), sink=writes.append, new_id=lambda: "x", yield_after_write=push,
    )
    outcome = inv.run().outcome
    assert isinstance(outcome, Suspended if push else Completed)
    assert calls == (["a"] if push else ["a", "b", "c"])


def test_map_and_invoke_can_send_children_to_another_pool() -> None:
    def fn(ctx: Any) -> Any:
        one = ctx.step.invoke("one", "child-fn", {"x": 1}, pool="background")
        return ctx.step.map("many", "child-fn", [1, 2], pool="background"), one

    def invoke(memo: dict[str, MemoStep]) -> StepWrite:
        inv = Invocation(fn=fn, function_id="f", run_id="r1", event=Event("e", {}, "ev1"), memo=memo, retries=0,
                         backoff=Backoff(), sink=lambda w: None, new_id=lambda: "c1",
                         known_functions=frozenset({"child-fn"}))
        write = inv.run().final_write
        assert write is not None
        return write

    assert [(c.function_id, c.pool) for c in invoke({}).children] == [("child-fn", "background")]
    done = {"one": MemoStep("one", "invoke", "completed", 1, "5", seq=1)}
    assert [(c.index, c.pool) for c in invoke(done).children] == [(0, "background"), (1, "background")]
