"""``conveyor runs watch``: a live progress bar of a run's children, on every backend.

A real app on the test's database: a parent maps a child function over items, a
worker thread runs them, and the command follows the parent until it ends.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

import conveyor
from conveyor import Context, NonRetriableError
from conveyor.cli import render
from conveyor.cli.main import main
from conveyor.cli.watch import watch

CHILDREN = 20


class FanOut:
    """A parent ``fan-out`` mapping ``square`` over ``range(data.n)``; item ``data.fail`` fails for good.

    Children wait for ``gate`` (set by default) so a test can hold them mid-way.
    """

    def __init__(self, app: conveyor.Conveyor) -> None:
        self.app = app
        self.gate = threading.Event()
        self.gate.set()
        gate = self.gate

        @app.function(pool="background", retries=0)
        def square(ctx: Context) -> int:
            if not gate.wait(timeout=30):
                raise RuntimeError("gate never opened")
            item = ctx.event.data
            if item["i"] == item["fail"]:
                raise NonRetriableError(f"item {item['i']} is bad")
            return int(item["i"]) ** 2

        @app.function(on="fan.out", retries=0)
        def fan_out(ctx: Context) -> int:
            n, fail = ctx.event.data["n"], ctx.event.data.get("fail")
            results = ctx.step.map("square", square, ({"i": i, "fail": fail} for i in range(n)))
            return int(ctx.step.run("sum", lambda: sum(results)))

    def start(self, n: int = CHILDREN, fail: int | None = None) -> str:
        event_id = self.app.send("fan.out", {"n": n, "fail": fail})
        [run] = self.app.runs_for_event(event_id)
        return run.id


@pytest.fixture
def fanout(app: conveyor.Conveyor, start_worker: Callable[..., Any]) -> Iterator[FanOut]:
    f = FanOut(app)
    start_worker(app, concurrency=4)
    yield f
    f.gate.set()  # never leave a child blocked at teardown


@pytest.fixture
def watch_cli(db_url: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["runs", "watch", *args, "--database", db_url])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_watch_follows_a_fan_out_to_the_end(fanout: FanOut, watch_cli: Callable[..., tuple[int, str, str]]) -> None:
    run_id = fanout.start()
    code, out, err = watch_cli(run_id, "--interval", "0.05")
    assert (code, err) == (0, "")
    final = [line for line in out.splitlines() if line.startswith("fan-out ")][-1]
    assert ": completed" in final
    assert f"children {CHILDREN}/{CHILDREN} (100%)" in final
    assert f"queued=0 running=0 waiting=0 completed={CHILDREN} failed=0 cancelled=0" in final
    assert "rate=" in final and "eta=0.0s" in final
    assert f"{CHILDREN}/{CHILDREN} ended ({CHILDREN} completed, 0 failed" in out  # the run's detail
    assert str(sum(i * i for i in range(CHILDREN))) in out


def test_watch_exits_1_when_a_child_fails(fanout: FanOut, watch_cli: Callable[..., tuple[int, str, str]]) -> None:
    run_id = fanout.start(fail=3)
    code, out, err = watch_cli(run_id, "--interval", "0.05")
    assert (code, err) == (1, "")
    final = [line for line in out.splitlines() if line.startswith("fan-out ")][-1]
    assert ": failed" in final
    assert f"completed={CHILDREN - 1} failed=1" in final
    assert "1 of 20 child runs failed" in out or "item 3 is bad" in out


def test_watch_prints_progress_while_children_run(fanout: FanOut, app: conveyor.Conveyor) -> None:
    """Children held at a gate: the first lines show the fan-out under way, the last its end."""
    fanout.gate.clear()
    run_id = fanout.start()
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    seen: list[conveyor.Progress | None] = []

    def get_run(rid: str) -> conveyor.Run:
        run = app.get_run(rid)
        seen.append(run.progress)
        if run.progress is not None and run.progress.total and run.progress.ended == 0:
            fanout.gate.set()  # the watch has shown children pending: let them go
        return run

    final = watch(get_run, run_id, console, interval=0.02)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert final.status == "completed"
    assert any(f"children 0/{CHILDREN} (0%)" in line for line in lines), lines
    assert f"completed={CHILDREN}" in lines[-1] and ": completed" in lines[-1]
    counts = [p for p in seen if p is not None]
    assert all(p.total == CHILDREN for p in counts)
    assert [p.ended for p in counts] == sorted(p.ended for p in counts)  # never goes backwards


def test_watch_on_a_terminal_draws_a_live_bar(
    fanout: FanOut, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr("conveyor.cli.runs.stdout_console", lambda: terminal)
    run_id = fanout.start()
    assert main(["runs", "watch", run_id, "--interval", "0.05", "--database", db_url]) == 0
    out = buffer.getvalue()
    assert "━" in out  # the bar
    assert f"{CHILDREN}/{CHILDREN} 100%" in out
    assert f"completed {CHILDREN}" in out and "failed 0" in out


def test_watch_a_run_without_children(app: conveyor.Conveyor, watch_cli: Callable[..., tuple[int, str, str]]) -> None:
    @app.function(on="plain.requested")
    def plain(ctx: Context) -> str:
        return str(ctx.step.run("one", lambda: "done"))

    event_id = app.send("plain.requested")
    app.drain(timeout=10)
    [run] = app.runs_for_event(event_id)
    code, out, _ = watch_cli(run.id)
    assert code == 0
    assert "plain " in out and "completed" in out and "children" not in out


@pytest.mark.parametrize("interval", ["0", "-1", "abc", "61"])
def test_watch_rejects_a_bad_interval(interval: str, watch_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = watch_cli("some-run", "--interval", interval)
    assert code == 2 and out == ""
    assert "--interval" in err and "Traceback" not in err


# --- renderings, without a database ---------------------------------------------------------


def progress(**counts: Any) -> conveyor.Progress:
    return conveyor.Progress(**counts)


def test_progress_line_and_bar() -> None:
    p = progress(total=10_000, queued=600, running=16, completed=9_380, failed=4,
                 started_at=datetime(2026, 1, 1, tzinfo=UTC), rate=3_165.4, eta=0.19)
    line = render.progress_line(p)
    assert line == (
        "children 9384/10000 (94%) queued=600 running=16 waiting=0 completed=9380 failed=4 cancelled=0 "
        "rate=3,165/s eta=0.2s"
    )
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render.progress_bar(p))
    console.print(render.progress_counts(p))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "9,384/10,000" in text and " 94%" in text and "3,165/s" in text and "ETA 0.2s" in text
    assert "queued 600  running 16  waiting 0  completed 9,380  failed 4  cancelled 0" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.04, "0.0s"), (9.94, "9.9s"), (12.4, "12s"), (125, "2m05s"), (3725, "1h02m"), (-1, "0.0s")],
)
def test_seconds_text(seconds: float | None, text: str) -> None:
    assert render.seconds_text(seconds) == text


@pytest.mark.parametrize(("rate", "text"), [(0.0, "0.00/s"), (0.5, "0.50/s"), (12.34, "12.3/s"), (4617.2, "4,617/s")])
def test_rate_text(rate: float, text: str) -> None:
    assert render.rate_text(rate) == text
