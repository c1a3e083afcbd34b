"""The public surface of ``conveyor`` is the one API.md names, and it is frozen."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import conveyor

# Every name API.md (and the SDK surface built from it) makes public.
API_NAMES = [
    "Backoff",
    "Concurrency",
    "ConfigError",
    "Context",
    "Conveyor",
    "ConveyorError",
    "Event",
    "InvalidInput",
    "InvalidState",
    "NonDeterminismError",
    "NonRetriableError",
    "NotFound",
    "RetryAfterError",
    "Run",
    "RunFailed",
    "RunHandle",
    "RunTimeout",
    "SerializationError",
    "StepError",
    "StepRecord",
    "Worker",
    "load_app",
]

# The async twins API.md and the SDK surface promise on Conveyor.
ASYNC_TWINS = [
    "asend",
    "asend_many",
    "aget_run",
    "aruns_for_event",
    "alist_runs",
    "acancel_run",
    "areplay_run",
    "adead_letters",
    "aredrive",
]


def test_all_is_sorted_and_unique() -> None:
    names = list(conveyor.__all__)
    assert names == sorted(names), "conveyor.__all__ must be sorted"
    assert len(names) == len(set(names)), "conveyor.__all__ has duplicates"


@pytest.mark.parametrize("name", API_NAMES)
def test_api_name_is_exported(name: str) -> None:
    assert name in conveyor.__all__, f"{name} missing from conveyor.__all__"
    assert hasattr(conveyor, name), f"conveyor.{name} is not importable"


def test_every_name_in_all_exists() -> None:
    missing = [n for n in conveyor.__all__ if not hasattr(conveyor, n)]
    assert missing == []


def test_error_tree() -> None:
    for name in [
        "ConfigError",
        "InvalidInput",
        "SerializationError",
        "NotFound",
        "InvalidState",
        "NonDeterminismError",
        "RunFailed",
        "RunTimeout",
    ]:
        assert issubclass(getattr(conveyor, name), conveyor.ConveyorError), name
    assert issubclass(conveyor.SerializationError, conveyor.InvalidInput)
    assert issubclass(conveyor.RunTimeout, TimeoutError)
    # user-facing retry steering errors are ordinary exceptions
    for name in ["NonRetriableError", "RetryAfterError", "StepError"]:
        assert issubclass(getattr(conveyor, name), Exception), name
    err = conveyor.StepError("fetch", "ValueError", "boom")
    assert (err.step_id, err.error_type, err.message) == ("fetch", "ValueError", "boom")


@pytest.mark.parametrize("name", ASYNC_TWINS)
def test_documented_async_twin_exists(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(conveyor.Conveyor, name, None)), (
        f"Conveyor.{name} must be an async method"
    )
    assert callable(getattr(conveyor.Conveyor, name[1:], None)), f"Conveyor.{name[1:]} missing"


def _async_twins() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(conveyor.Conveyor)
        if name.startswith("a") and not name.startswith("_") and inspect.iscoroutinefunction(member)
    )


def test_there_are_async_twins() -> None:
    assert set(ASYNC_TWINS) <= set(_async_twins())


@pytest.mark.parametrize("name", _async_twins())
def test_async_twin_has_sync_twin_with_same_parameters(name: str) -> None:
    async_fn = getattr(conveyor.Conveyor, name)
    sync_fn = getattr(conveyor.Conveyor, name[1:], None)
    assert sync_fn is not None, f"{name} has no sync twin {name[1:]}"
    assert not inspect.iscoroutinefunction(sync_fn), f"{name[1:]} must be synchronous"
    a_params = list(inspect.signature(async_fn).parameters.values())
    s_params = list(inspect.signature(sync_fn).parameters.values())
    assert [(p.name, p.kind, p.default) for p in a_params] == [(p.name, p.kind, p.default) for p in s_params], (
        f"{name} and {name[1:]} differ in parameters"
    )


def test_async_twins_work(app) -> None:
    @app.function(on="surface.async")
    def echo(ctx):
        return ctx.event.data

    async def scenario() -> tuple[str, list, object, list]:
        event_id = await app.asend("surface.async", {"n": 1}, id="evt-async")
        ids = await app.asend_many([conveyor.Event(name="surface.async", data={"n": 2})])
        runs = await app.aruns_for_event(event_id)
        return event_id, ids, runs, await app.alist_runs(function="echo")

    event_id, ids, _runs, _listed = asyncio.run(scenario())
    assert event_id == "evt-async"
    assert len(ids) == 1
    app.drain(timeout=10)
    (run,) = app.runs_for_event(event_id)
    got = asyncio.run(app.aget_run(run.id))
    assert got.status == "completed"
    assert got.output == {"n": 1}
    assert len(asyncio.run(app.alist_runs(function="echo"))) == 2


def test_function_id_defaults_to_name_with_dashes(app) -> None:
    @app.function(on="surface.id")
    def transcribe_audio(ctx):
        return None

    @app.function(id="explicit-id")
    def other_name(ctx):
        return None

    assert transcribe_audio.id == "transcribe-audio"
    assert other_name.id == "explicit-id"
    assert set(app.functions) >= {"transcribe-audio", "explicit-id"}
    assert transcribe_audio.pool == "default"


def test_get_unknown_run_is_not_found(app) -> None:
    with pytest.raises(conveyor.NotFound):
        app.get_run("no-such-run")
