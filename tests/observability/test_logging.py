"""Log output: JSON lines with the run, step and attempt of each record about a run, from a
real worker process; the text format shows them too; the formatters on their own."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from tests.conftest import wait_until
from tests.support.otel import recording_spans

import conveyor
from conveyor.observability.logging import JsonFormatter, TextFormatter

from .helpers import APP, spawn, start_dev


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text``, each of which must be a JSON object."""
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a stderr line is not JSON: {line!r}\n{text[-3000:]}")
    return records


def run_of(app: Any, event_id: str) -> Any:
    def ended() -> Any:
        runs = app.runs_for_event(event_id)
        return runs[0] if runs and runs[0].status in ("completed", "failed") else None

    return wait_until(ended, 60, f"the run of event {event_id} to end")


def test_a_worker_logs_json_lines_with_the_run_step_and_attempt_of_a_failing_attempt(
    db_url: str, tmp_path: Path,
) -> None:
    worker = spawn(tmp_path, "worker", APP, "--database", db_url, "--log-format", "json")
    sender = conveyor.Conveyor("sender", database=db_url)
    try:
        worker.wait_for("serving pools")  # its functions are registered
        doomed = run_of(sender, sender.send("obs.doomed", {"why": "testing"}))
        flaky = run_of(sender, sender.send("obs.flaky"))
        assert (doomed.status, flaky.status) == ("failed", "completed")
    finally:
        code = worker.stop()
        sender.close()
    assert code == 0
    records = json_lines(worker.stderr())  # the banner too: every line a shipper reads is JSON
    assert any("conveyor worker" in r["message"] and r["logger"] == "conveyor.cli" for r in records)

    [attempt] = [r for r in records if r.get("run_id") == doomed.id and r["level"] == "WARNING"]
    assert (attempt["step_id"], attempt["attempt"], attempt["function"]) == ("explode", 0, "doomed")
    assert "failed for good" in attempt["message"] and "no way: testing" in attempt["message"]
    [failed] = [r for r in records if r.get("run_id") == doomed.id and r["level"] == "ERROR"]
    assert "dead letter" in failed["message"] and failed["step_id"] == "explode"
    [retry] = [r for r in records if r.get("run_id") == flaky.id]
    assert (retry["step_id"], retry["attempt"], retry["level"]) == ("attempt", 0, "WARNING")
    assert "will be retried" in retry["message"]
    assert all(r["time"].endswith("Z") and "T" in r["time"] for r in records)


def test_the_text_format_shows_the_run_step_and_attempt(db_url: str, tmp_path: Path) -> None:
    # the flag wins over the variable
    worker = spawn(tmp_path, "worker", APP, "--database", db_url, "--log-format", "text", CONVEYOR_LOG_FORMAT="json")
    sender = conveyor.Conveyor("sender", database=db_url)
    try:
        worker.wait_for("serving pools")  # its functions are registered
        doomed = run_of(sender, sender.send("obs.doomed"))
    finally:
        assert worker.stop() == 0
        sender.close()
    line = next(x for x in worker.stderr().splitlines() if "step 'explode' failed for good" in x)
    assert line.endswith(f"[run={doomed.id} step=explode attempt=0]")
    assert not line.startswith("{")


@pytest.mark.backends("sqlite")
def test_the_server_takes_its_format_from_the_environment(db_url: str, tmp_path: Path) -> None:
    proc, url = start_dev(tmp_path, db_url, CONVEYOR_LOG_FORMAT="json")
    try:
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
    finally:
        assert proc.stop() == 0
    records = json_lines(proc.stderr())
    assert any("listening on" in r["message"] for r in records)


def record(**extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("conveyor.engine", logging.WARNING, __file__, 1, "attempt %d failed", (1,), None)
    rec.__dict__.update(extra)
    return rec


def test_the_json_formatter_writes_the_run_fields_and_the_trace_ids() -> None:
    out = json.loads(JsonFormatter().format(record(run_id="r1", step_id="s", attempt=0, function="f")))
    assert out == {"time": out["time"], "level": "WARNING", "logger": "conveyor.engine",
                   "message": "attempt 1 failed", "function": "f", "run_id": "r1", "step_id": "s", "attempt": 0}
    with recording_spans(), trace.get_tracer("t").start_as_current_span("s") as span:
        traced = json.loads(JsonFormatter().format(record()))
    ctx = span.get_span_context()
    assert (traced["trace_id"], traced["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    try:
        raise ValueError("bad")
    except ValueError:
        failing = record()
        failing.exc_info = sys.exc_info()
    assert "ValueError: bad" in json.loads(JsonFormatter().format(failing))["exc"]


def test_the_text_formatter_appends_the_run_fields_only_when_there_are_some() -> None:
    assert TextFormatter().format(record(run_id="r1", step_id=None, attempt=2)).endswith(
        "conveyor.engine: attempt 1 failed [run=r1 attempt=2]")
    assert TextFormatter().format(record()).endswith("conveyor.engine: attempt 1 failed")
