"""The executor is pure: user code + memo in, step writes + a stop op out. No database here."""

from __future__ import annotations

import inspect
import random
from typing import Any

import pytest

from conveyor.errors import NonRetriableError, RetryAfterError, StepError
from conveyor.executor.invocation import Invocation
from conveyor.executor.retry import retry_delay
from conveyor.executor.steps import AsyncSteps, SyncSteps
from conveyor.records import Completed, Failed, MemoStep, StepWrite, Suspended
from conveyor.types import Backoff, Event


def invocation(fn: Any, memo: dict[str, MemoStep] | None = None, retries: int = 3,
               now: float = 1000.0, budget: float = 60.0) -> tuple[Invocation, list[StepWrite]]:
    writes: list[StepWrite] = []
    counter = iter(range(10**6))
    inv = Invocation(
        fn=fn, function_id="f", run_id="r1", event=Event("e", {"user": "u1"}, "ev1"), memo=memo or {},
        retries=retries, backoff=Backoff(base=1, cap=8, jitter=0), sink=writes.append,
        new_id=lambda: f"id{next(counter)}", clock=lambda: now, budget=budget,
    )
    return inv, writes


def memo_of(writes: list[StepWrite]) -> dict[str, MemoStep]:
    return {w.id: MemoStep(w.id, w.kind, w.status, w.attempts, w.output, w.error, w.wake_at, w.seq, w.started_at)
            for w in writes}


def test_consecutive_steps_run_in_one_invocation_and_checkpoint_each() -> None:
    def fn(ctx: Any) -> int:
        a = ctx.step.run("a", lambda: 1)
        b = ctx.step.run("b", lambda x: x + 1, a)
        return b * 10

    inv, writes = invocation(fn)
    result = inv.run()
    assert result.outcome == Completed("20")
    assert [(w.id, w.status, w.output) for w in writes] == [("a", "completed", "1"), ("b", "completed", "2")]


def test_replay_returns_memo_without_running_the_body() -> None:
    calls = []

    def fn(ctx: Any) -> Any:
        return ctx.step.run("a", lambda: calls.append(1) or "fresh")

    inv, writes = invocation(fn, memo={"a": MemoStep("a", "run", "completed", 1, '"memo"', seq=1)})
    assert inv.run().outcome == Completed('"memo"')
    assert calls == [] and writes == []


def test_failed_attempt_suspends_for_retry_with_backoff() -> None:
    def fn(ctx: Any) -> None:
        ctx.step.run("a", lambda: 1 / 0)

    inv, writes = invocation(fn, now=1000.0)
    result = inv.run()
    assert result.outcome == Suspended(1001.0, "retry")
    assert result.final_write is not None and result.final_write.status == "retrying"
    assert result.final_write.attempts == 1 and writes == []


def test_last_attempt_raises_step_error_into_user_code() -> None:
    seen = []

    def fn(ctx: Any) -> str:
        try:
            ctx.step.run("a", lambda: 1 / 0)
        except StepError as err:
            seen.append((err.step_id, err.error_type, err.message))
        return "recovered"

    memo = {"a": MemoStep("a", "run", "retrying", 3, None, {"type": "ZeroDivisionError"}, seq=1)}
    inv, writes = invocation(fn, memo=memo, retries=3)
    assert inv.run().outcome == Completed('"recovered"')
    assert seen == [("a", "ZeroDivisionError", "division by zero")]
    assert writes[0].status == "failed" and writes[0].attempts == 4


def test_repeated_step_ids_get_a_counter_suffix() -> None:
    def fn(ctx: Any) -> list[int]:
        return [ctx.step.run("item", lambda i=i: i) for i in range(3)]

    inv, writes = invocation(fn)
    inv.run()
    assert [w.id for w in writes] == ["item", "item:1", "item:2"]


def test_kind_mismatch_is_a_non_determinism_error() -> None:
    def fn(ctx: Any) -> None:
        ctx.step.sleep("a", 5)

    inv, _ = invocation(fn, memo={"a": MemoStep("a", "run", "completed", 1, "1", seq=1)})
    outcome = inv.run().outcome
    assert isinstance(outcome, Failed) and outcome.error["type"] == "NonDeterminismError"
    assert "'run'" in outcome.error["message"] and "'sleep'" in outcome.error["message"]


def test_divergent_replay_is_a_non_determinism_error() -> None:
    def fn(ctx: Any) -> None:
        ctx.step.run("b", lambda: 2)  # the memo says the code ran "a" first

    inv, _ = invocation(fn, memo={"a": MemoStep("a", "run", "completed", 1, "1", seq=1)})
    outcome = inv.run().outcome
    assert isinstance(outcome, Failed) and outcome.error["type"] == "NonDeterminismError"


def test_a_swallowed_suspension_still_suspends() -> None:
    def fn(ctx: Any) -> str:
        try:  # noqa: SIM105 - careless user code, on purpose
            ctx.step.sleep("nap", 60)
        except BaseException:
            pass
        return "should not complete"

    inv, _ = invocation(fn)
    assert inv.run().outcome == Suspended(1060.0, "sleep")


def test_non_serializable_output_fails_the_step_without_retry() -> None:
    def fn(ctx: Any) -> None:
        ctx.step.run("a", lambda: object())

    inv, writes = invocation(fn, retries=5)
    outcome = inv.run().outcome
    assert isinstance(outcome, Failed) and outcome.error["type"] == "SerializationError"
    assert writes[0].attempts == 1 and "JSON-serializable" in writes[0].error["message"]  # type: ignore[index]


def test_time_budget_yields_between_steps() -> None:
    clock = iter([0.0, 0.0, 100.0, 100.0, 100.0, 100.0])

    def fn(ctx: Any) -> None:
        ctx.step.run("a", lambda: 1)
        ctx.step.run("b", lambda: 2)

    inv, writes = invocation(fn, budget=10)
    inv.clock = lambda: next(clock)
    result = inv.run()
    assert isinstance(result.outcome, Suspended) and result.outcome.reason == "yield"
    assert [w.id for w in writes] == ["a"]


def test_async_function_with_async_and_sync_step_bodies() -> None:
    async def body() -> int:
        return 2

    async def fn(ctx: Any) -> int:
        a = await ctx.step.run("a", body)
        b = await ctx.step.run("b", lambda: 3)
        return a * b

    inv, writes = invocation(fn)
    assert inv.run().outcome == Completed("6")
    assert len(writes) == 2


def test_async_steps_have_the_same_signatures_as_sync_steps() -> None:
    for name, member in inspect.getmembers(SyncSteps, inspect.isfunction):
        if name.startswith("_"):
            continue
        twin = getattr(AsyncSteps, name)
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(member), name


def test_logs_between_steps_are_not_repeated_on_replay() -> None:
    def fn(ctx: Any) -> None:
        ctx.log.info("before a")
        ctx.step.run("a", lambda: 1)
        ctx.log.info("after a")
        ctx.step.run("b", lambda: 2)

    inv, _ = invocation(fn, memo={"a": MemoStep("a", "run", "completed", 1, "1", seq=1)})
    result = inv.run()
    assert [r.message for r in result.logs] == ["after a"]


@pytest.mark.parametrize(
    ("error", "failed", "retries", "expected"),
    [
        (ValueError("x"), 1, 3, 1.0),
        (ValueError("x"), 3, 3, 4.0),
        (ValueError("x"), 4, 3, None),
        (NonRetriableError("x"), 1, 3, None),
        (RetryAfterError("x", after=42), 1, 3, 42.0),
        (RetryAfterError("x", after=42), 4, 3, None),
        (ValueError("x"), 1, 0, None),
    ],
)
def test_retry_delay(error: BaseException, failed: int, retries: int, expected: float | None) -> None:
    assert retry_delay(error, failed, retries, Backoff(base=1, cap=8, jitter=0)) == expected


def test_backoff_is_capped_and_jittered() -> None:
    rnd = random.Random(7)
    delays = [retry_delay(ValueError(), 10, 20, Backoff(base=1, cap=8, jitter=0.5), rnd) for _ in range(200)]
    assert all(d is not None and 4.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 6) for d in delays if d is not None}) > 100


def test_payloads_may_nest_100_levels_and_no_more() -> None:
    from conveyor.errors import SerializationError
    from conveyor.executor import codec

    deep_ok = [[[["x"]]]]
    for _ in range(96):
        deep_ok = [deep_ok]
    assert codec.dumps(deep_ok).count("[") == 100
    with pytest.raises(SerializationError, match="more than 100 levels"):
        codec.dumps([deep_ok])
    assert codec.dumps({"a": deep_ok[0]}).count("[") == 99  # an object around 99 lists: 100 levels
    with pytest.raises(SerializationError, match="more than 100 levels"):
        codec.dumps({"a": deep_ok})  # an object around 100 lists: 101
    alternating: object = "x"
    for level in range(101):
        alternating = {"k": alternating} if level % 2 else [alternating]
    with pytest.raises(SerializationError, match="more than 100 levels"):
        codec.dumps(alternating)
    # brackets inside strings are not nesting; wide data is not deep
    assert codec.loads(codec.dumps({"s": "[{" * 500, "t": "\\"})) == {"s": "[{" * 500, "t": "\\"}
    wide = [{"k": i, "v": [i, {"w": [i]}]} for i in range(5000)]
    assert codec.loads(codec.dumps(wide)) == wide
