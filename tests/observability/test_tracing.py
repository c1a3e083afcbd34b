"""Traces: one trace from the request that sends an event, through its run's invocations and
steps, to the child runs a map starts and their steps (OpenTelemetry's in-memory exporter,
real runs on every backend). And without a configured provider, nothing is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tests.server.helpers import query
from tests.support.otel import named, one, parent_of, recording_spans, span_id, trace_ids

import conveyor
from conveyor.engine.events import make_event
from conveyor.observability import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def define_order(app: Any, style: str) -> None:
    """``place-order``: two steps, a map over three ``ship-item`` children, a reduce."""
    if style == "async":

        @app.function(on="order.placed", retries=0)
        async def place_order(ctx: conveyor.Context) -> int:
            await ctx.step.run("validate", lambda: True)
            n = await ctx.step.run("price", lambda: 3)
            shipped = await ctx.step.map("ship", ship_item, list(range(n)))
            return await ctx.step.run("report", lambda: sum(shipped))  # type: ignore[no-any-return]

        @app.function(retries=0)
        async def ship_item(ctx: conveyor.Context) -> int:
            return await ctx.step.run("pack", lambda: ctx.event.data * 10)  # type: ignore[no-any-return]

    else:

        @app.function(on="order.placed", retries=0)
        def place_order(ctx: conveyor.Context) -> int:
            ctx.step.run("validate", lambda: True)
            n = ctx.step.run("price", lambda: 3)
            shipped = ctx.step.map("ship", ship_item, list(range(n)))
            return ctx.step.run("report", lambda: sum(shipped))  # type: ignore[no-any-return]

        @app.function(retries=0)
        def ship_item(ctx: conveyor.Context) -> int:
            return ctx.step.run("pack", lambda: ctx.event.data * 10)  # type: ignore[no-any-return]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_one_trace_links_the_request_its_run_the_steps_and_the_children(
    app: Any, spans: InMemorySpanExporter, style: str,
) -> None:
    define_order(app, style)
    with trace.get_tracer("test").start_as_current_span("request"):
        event_id = app.send("order.placed", {"customer": "c1"})
    app.drain(timeout=30)
    [run] = app.runs_for_event(event_id)
    assert app.get_run(run.id).output == 30

    finished = spans.get_finished_spans()
    assert len(trace_ids(finished)) == 1, sorted(s.name for s in finished)  # one trace, every span
    request = one(finished, "request")
    runs = named(finished, "conveyor.run place-order")
    assert len(runs) == 2  # two invocations: up to the map, and after the children ended
    assert {parent_of(r) for r in runs} == {span_id(request)}
    first, second = sorted(runs, key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["conveyor.status"] == "suspended"
    assert (first.attributes or {})["conveyor.suspend_reason"] == "map"
    assert (second.attributes or {})["conveyor.status"] == "completed"
    assert (first.attributes or {})["conveyor.run_id"] == run.id
    assert (first.attributes or {})["conveyor.function"] == "place-order"

    steps = {s.name: s for s in finished if s.name.startswith("conveyor.step ") and parent_of(s) == span_id(first)}
    assert set(steps) == {"conveyor.step validate", "conveyor.step price", "conveyor.step ship"}
    assert (steps["conveyor.step validate"].attributes or {})["conveyor.status"] == "completed"
    ship = steps["conveyor.step ship"]
    assert (ship.attributes or {})["conveyor.step.kind"] == "map"
    report = one(finished, "conveyor.step report")
    assert parent_of(report) == span_id(second)

    children = named(finished, "conveyor.run ship-item")
    assert len(children) == 3
    assert {parent_of(c) for c in children} == {span_id(ship)}  # the children hang under the map step
    packs = named(finished, "conveyor.step pack")
    assert len(packs) == 3
    assert {parent_of(p) for p in packs} == {span_id(c) for c in children}
    assert {(c.attributes or {})["conveyor.run_id"] for c in children} == {
        r.id for r in app.list_runs(function="ship-item")}


def test_invoke_and_send_event_carry_the_step_span_to_the_runs_they_start(
    app: Any, spans: InMemorySpanExporter,
) -> None:
    @app.function(on="a.go", retries=0)
    def start(ctx: conveyor.Context) -> int:
        ctx.step.send_event("announce", "b.go", {"n": 1})
        return ctx.step.invoke("double", double, 21)  # type: ignore[no-any-return]

    @app.function(retries=0)
    def double(ctx: conveyor.Context) -> int:
        return ctx.event.data * 2  # type: ignore[no-any-return]

    @app.function(on="b.go", retries=0)
    def listen(ctx: conveyor.Context) -> str:
        return ctx.step.run("hear", lambda: "heard")  # type: ignore[no-any-return]

    with trace.get_tracer("test").start_as_current_span("request"):
        app.send("a.go")
    app.drain(timeout=30)

    finished = spans.get_finished_spans()
    assert len(trace_ids(finished)) == 1
    assert parent_of(one(finished, "conveyor.run double")) == span_id(one(finished, "conveyor.step double"))
    assert parent_of(one(finished, "conveyor.run listen")) == span_id(one(finished, "conveyor.step announce"))
    assert all(parent_of(r) == span_id(one(finished, "request")) for r in named(finished, "conveyor.run start"))


def test_a_retried_step_and_a_failed_run_say_so_on_their_spans(app: Any, spans: InMemorySpanExporter) -> None:
    @app.function(on="c.go", retries=1)
    def shaky(ctx: conveyor.Context) -> None:
        def boom() -> None:
            raise ValueError(f"boom {ctx.attempt}")

        ctx.step.run("boom", boom)

    with trace.get_tracer("test").start_as_current_span("request"):
        app.send("c.go")
    app.drain(timeout=30)
    finished = spans.get_finished_spans()
    assert len(trace_ids(finished)) == 1
    attempts = sorted(named(finished, "conveyor.step boom"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {})["conveyor.status"] for s in attempts] == ["retrying", "failed"]
    assert [(s.attributes or {})["conveyor.attempt"] for s in attempts] == [0, 1]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert [e.attributes["exception.message"] for s in attempts for e in s.events  # type: ignore[index]
            if e.name == "exception"] == ["boom 0", "boom 1"]
    runs = sorted(named(finished, "conveyor.run shaky"), key=lambda s: s.start_time or 0)
    assert [(r.attributes or {})["conveyor.status"] for r in runs] == ["suspended", "failed"]
    assert runs[-1].status.status_code is StatusCode.ERROR
    assert "boom 1" in (runs[-1].status.description or "")


def test_a_run_sent_outside_any_trace_has_a_trace_per_invocation_tagged_with_its_id(
    app: Any, spans: InMemorySpanExporter,
) -> None:
    @app.function(on="e.go", retries=0)
    def napper(ctx: conveyor.Context) -> None:
        ctx.step.sleep("nap", 0.01)
        ctx.step.run("after", lambda: None)

    [run_id] = [r.id for r in app.runs_for_event(app.send("e.go"))]
    app.drain(timeout=30)
    finished = spans.get_finished_spans()
    runs = named(finished, "conveyor.run napper")
    assert len(runs) == 2 and all(r.parent is None for r in runs)  # roots: there was no trace to join
    assert {(r.attributes or {})["conveyor.run_id"] for r in runs} == {run_id}
    for r in runs:  # each invocation's steps are in its trace
        steps = [s for s in finished if s.name.startswith("conveyor.step") and parent_of(s) == span_id(r)]
        assert steps and trace_ids(steps) == trace_ids([r])


def test_without_a_provider_a_run_passes_its_event_trace_on_to_its_children(app: Any, db_url: str) -> None:
    """A process that records nothing still carries the trace to the runs it starts."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    @app.function(on="d.go", retries=0)
    def fan(ctx: conveyor.Context) -> int:
        return sum(ctx.step.map("each", leaf, [1, 2]))

    @app.function(retries=0)
    def leaf(ctx: conveyor.Context) -> int:
        return ctx.event.data  # type: ignore[no-any-return]

    engine = app._engine()
    assert tracing.tracer() is None
    engine.send([make_event("d.go", {}, "e1", traceparent)])  # as the HTTP intake does with a header
    app.drain(timeout=30)
    children = app.list_runs(function="leaf")
    assert len(children) == 2
    ids = ", ".join(f"'{c.event_id}'" for c in children)
    assert query(db_url, f"SELECT DISTINCT trace FROM conveyor_events WHERE id IN ({ids})") == [(traceparent,)]


def test_without_opentelemetry_configured_nothing_of_it_is_imported(tmp_path: Any) -> None:
    code = textwrap.dedent(f"""
        import sys
        import conveyor
        app = conveyor.Conveyor("t", database="sqlite:///{tmp_path / 'x.db'}", blob_dir="{tmp_path / 'blobs'}")

        @app.function(on="go", retries=0)
        def go(ctx):
            ctx.step.run("one", lambda: 1)
            return sum(ctx.step.map("fan", leaf, [1, 2]))

        @app.function()
        def leaf(ctx):
            return ctx.event.data

        app.send("go")
        app.drain(timeout=30)
        assert app.list_runs(function="go")[0].output == 3
        print(",".join(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_traceparent_values_are_checked() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.valid_traceparent(good) == good
    for bad in (None, 7, "", good.upper(), "01" + good[2:], good[:-1], "00-" + "0" * 32 + good[35:],
                good[:36] + "0" * 16 + good[52:], good + " "):
        assert tracing.valid_traceparent(bad) is None, bad
