"""Push delivery, observed: the trace goes through the protocol into the endpoint's runs and
back into the children they start; failed deliveries are counted; the dispatcher counts as a
process serving its endpoints' pools; the server counts the runs it pushed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import wait_until
from tests.support.otel import named, one, parent_of, recording_spans, span_id, trace_ids

from .conftest import PushEnv
from .harness import API_TOKEN


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def test_a_pushed_fan_out_is_one_trace_from_the_request_to_the_children_steps(
    push_env: PushEnv, spans: InMemorySpanExporter,
) -> None:
    with trace.get_tracer("test").start_as_current_span("request"):
        event_id = push_env.code.send("push.split", {"n": 3})
    parent = push_env.wait(push_env.run_of(event_id))
    assert parent.status == "completed", parent.error

    # (FastAPI records the endpoint's and the server's HTTP requests too, each a trace of its own)
    finished = [s for s in spans.get_finished_spans() if s.name == "request" or s.name.startswith("conveyor.")]
    assert len(trace_ids(finished)) == 1, sorted(s.name for s in finished)
    request = one(finished, "request")
    runs = named(finished, "conveyor.run split")
    assert len(runs) >= 2 and {parent_of(r) for r in runs} == {span_id(request)}  # one per pushed invocation
    split = one(finished, "conveyor.step square")
    assert parent_of(split) in {span_id(r) for r in runs}
    children = named(finished, "conveyor.run square")
    assert len(children) == 3 and {parent_of(c) for c in children} == {span_id(split)}
    assert {parent_of(s) for s in named(finished, "conveyor.step sq")} == {span_id(c) for c in children}


def metrics(push_env: PushEnv) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    resp = httpx.get(push_env.server.url + "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_failed_deliveries_are_counted_and_the_dispatcher_serves_its_pools(push_env: PushEnv) -> None:
    push_env.faults["live"].fail_next("500")
    run = push_env.wait(push_env.send("push.three", {"key": "m"}))
    assert run.status == "completed", run.error
    # the counters move just after the commit that push_env.wait saw
    m = wait_until(lambda: (m := metrics(push_env)).get("conveyor_runs_completed_total") and m, 30,
                   "the completed run counted")
    assert m["conveyor_push_delivery_errors_total"] == {(("pool", "live"), ("reason", "http_status")): 1}
    assert m["conveyor_runs_completed_total"] == {(("function", "three"),): 1}  # pushed and committed here
    assert m["conveyor_runs_started_total"] == {(("function", "three"),): 1}
    assert m["conveyor_push_endpoints"] == {(("pool", "background"),): 1, (("pool", "live"),): 1}
    workers = wait_until(lambda: metrics(push_env)["conveyor_workers"], 30, "the dispatcher to be in the registry")
    assert workers[(("pool", "live"),)] == 1 and workers[(("pool", "background"),)] == 1
    kinds = {w.kind for w in push_env.dispatcher.engine.workers()}
    assert kinds == {"dispatcher"}
