"""Events: durable, idempotent by id, routed once to every matching function."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import Event

from .helpers import only_run


def _register_recorder(app, tally, name="events.happened"):
    @app.function(on=name)
    def recorder(ctx):
        tally.hit("recorder", ctx.event.id)
        return {
            "id": ctx.event.id,
            "name": ctx.event.name,
            "data": ctx.event.data,
            "has_ts": ctx.event.ts is not None,
        }

    return recorder


def test_send_returns_the_given_or_a_generated_id(app, tally) -> None:
    _register_recorder(app, tally)
    given = app.send("events.happened", {"a": 1}, id="order-42")
    generated = app.send("events.happened", {"a": 2})
    assert given == "order-42"
    assert isinstance(generated, str) and generated and generated != given
    app.drain(timeout=10)
    run = only_run(app, given)
    assert run.status == "completed"
    assert run.event_id == "order-42"
    assert run.output == {
        "id": "order-42",
        "name": "events.happened",
        "data": {"a": 1},
        "has_ts": True,
    }
    assert only_run(app, generated).output["data"] == {"a": 2}


def test_data_defaults_to_empty_object(app, tally) -> None:
    _register_recorder(app, tally)
    event_id = app.send("events.happened")
    app.drain(timeout=10)
    assert only_run(app, event_id).output["data"] == {}


def test_same_id_twice_starts_one_run(app, tally) -> None:
    _register_recorder(app, tally)
    first = app.send("events.happened", {"v": 1}, id="dup")
    second = app.send("events.happened", {"v": 2}, id="dup")  # accepted and ignored
    assert first == second == "dup"
    app.drain(timeout=10)
    app.send("events.happened", {"v": 3}, id="dup")  # also after the run ended
    app.drain(timeout=10)
    run = only_run(app, "dup")
    assert run.output["data"] == {"v": 1}, "a duplicate event replaced the first"
    assert len(app.list_runs(function="recorder")) == 1


def test_event_matching_two_functions_starts_one_run_each(app, tally) -> None:
    @app.function(on="events.shared")
    def first_listener(ctx):
        tally.hit("first")
        return "first"

    @app.function(on=["events.other", "events.shared"])
    def second_listener(ctx):
        tally.hit("second")
        return "second"

    event_id = app.send("events.shared")
    app.drain(timeout=10)
    runs = app.runs_for_event(event_id)
    assert sorted(r.function_id for r in runs) == ["first-listener", "second-listener"]
    assert all(r.status == "completed" for r in runs)
    assert all(r.event_id == event_id for r in runs)
    assert (tally["first"], tally["second"]) == (1, 1)

    other = app.send("events.other")
    app.drain(timeout=10)
    assert [r.function_id for r in app.runs_for_event(other)] == ["second-listener"]


def test_event_matching_nothing_is_harmless(app, tally) -> None:
    _register_recorder(app, tally)
    orphan = app.send("events.nobody-listens", {"x": 1})
    assert isinstance(orphan, str)
    app.drain(timeout=5)
    assert app.runs_for_event(orphan) == []
    # the engine is still healthy
    ok = app.send("events.happened")
    app.drain(timeout=10)
    assert only_run(app, ok).status == "completed"

    # the orphan was stored: its id is taken, so a resend is ignored even once a
    # listener exists (and the stored orphan is not routed to the late listener)
    @app.function(on="events.nobody-listens")
    def late_listener(ctx):
        tally.hit("late")

    assert app.send("events.nobody-listens", {"x": 2}, id=orphan) == orphan
    app.drain(timeout=5)
    assert app.runs_for_event(orphan) == []
    assert tally["late"] == 0


def test_send_many_returns_ids_in_order(app, tally) -> None:
    _register_recorder(app, tally)
    ids = app.send_many(
        [
            Event(name="events.happened", data={"n": 0}, id="m-0"),
            Event(name="events.happened", data={"n": 1}),
            Event(name="events.happened", data={"n": 2}, id="m-2"),
            Event(name="events.happened", data={"n": 3}),
        ]
    )
    assert len(ids) == 4
    assert ids[0] == "m-0" and ids[2] == "m-2"
    assert len(set(ids)) == 4
    app.drain(timeout=10)
    assert [only_run(app, i).output["data"]["n"] for i in ids] == [0, 1, 2, 3]


def test_send_many_with_duplicate_ids_in_batch(app, tally) -> None:
    _register_recorder(app, tally)
    ids = app.send_many(
        [
            Event(name="events.happened", data={"n": 0}, id="same"),
            Event(name="events.happened", data={"n": 1}, id="same"),
        ]
    )
    assert ids == ["same", "same"]
    app.drain(timeout=10)
    assert only_run(app, "same").output["data"] == {"n": 0}


def test_non_serializable_data_is_refused_and_nothing_stored(app, tally) -> None:
    _register_recorder(app, tally)
    with pytest.raises(conveyor.SerializationError) as info:
        app.send("events.happened", {"bad": object()}, id="bad-1")
    assert isinstance(info.value, conveyor.ConveyorError)
    app.drain(timeout=2)
    assert app.runs_for_event("bad-1") == []
    # the id was not taken: a valid event with that id now starts a run
    app.send("events.happened", {"good": True}, id="bad-1")
    app.drain(timeout=10)
    assert only_run(app, "bad-1").output["data"] == {"good": True}


def test_batch_with_one_bad_event_is_rejected_whole(app, tally) -> None:
    _register_recorder(app, tally)
    with pytest.raises(conveyor.ConveyorError):
        app.send_many(
            [
                Event(name="events.happened", data={"ok": 1}, id="batch-ok"),
                Event(name="events.happened", data={"bad": {1, 2}}, id="batch-bad"),
            ]
        )
    app.drain(timeout=2)
    assert app.runs_for_event("batch-ok") == []
    assert tally.snapshot() == {}
    app.send("events.happened", {"ok": 2}, id="batch-ok")
    app.drain(timeout=10)
    assert only_run(app, "batch-ok").output["data"] == {"ok": 2}


@pytest.mark.parametrize("name", [123, None, b"bytes", ""])
def test_bad_event_name_is_refused(app, name) -> None:
    with pytest.raises(conveyor.ConveyorError):
        app.send(name, {})


@pytest.mark.parametrize("data", [[1, 2], "text", 5])
def test_event_data_must_be_an_object(app, data) -> None:
    with pytest.raises(conveyor.InvalidInput):
        app.send("events.happened", data)


def test_bad_event_id_is_refused(app) -> None:
    with pytest.raises(conveyor.ConveyorError):
        app.send("events.happened", {}, id=42)


def test_runs_for_event_lists_only_that_events_runs(app, tally) -> None:
    _register_recorder(app, tally)
    a = app.send("events.happened", {"which": "a"})
    b = app.send("events.happened", {"which": "b"})
    app.drain(timeout=10)
    run_a, run_b = only_run(app, a), only_run(app, b)
    assert run_a.id != run_b.id
    assert run_a.event_id == a and run_b.event_id == b
    assert app.runs_for_event("never-sent") == []
    listed = app.list_runs(function="recorder")
    assert {r.id for r in listed} == {run_a.id, run_b.id}
    assert app.list_runs(status="failed") == []
    assert {r.id for r in app.list_runs(status="completed")} == {run_a.id, run_b.id}
    assert len(app.list_runs(limit=1)) == 1
