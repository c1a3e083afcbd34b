"""The ``conveyor`` command, run in-process through ``main(argv)``, on every backend
(a real SQLite file, a throwaway PostgreSQL schema)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.cli.main import main

APPS = Path(__file__).parent / "apps"
BASIC = f"{APPS / 'basic.py'}:app"


@pytest.fixture
def url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database of the backend under test; the env var is restored after the test
    (the CLI may set it)."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    return db_url


@pytest.fixture
def app(url: str) -> Iterator[conveyor.Conveyor]:
    """The test app, imported afresh so that it binds to this test's database."""
    sys.modules.pop("basic", None)
    loaded = conveyor.load_app(BASIC)
    loaded.migrate()  # registers its functions in the database, as a starting worker does
    yield loaded
    loaded.close()
    sys.modules.pop("basic", None)


Run = Callable[..., tuple[int, str, str]]


def database_exists(url: str) -> bool:
    """Whether anything created the database: the SQLite file, or tables in the test's schema."""
    if url.startswith("sqlite:"):
        return Path(url.removeprefix("sqlite:///")).exists()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], url: str) -> Run:
    """Run ``conveyor ARGS --database URL``; return (exit code, stdout, stderr)."""

    def run(*args: str, database: bool = True) -> tuple[int, str, str]:
        argv = [*args, "--database", url] if database else list(args)
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def send(app: conveyor.Conveyor, name: str, data: dict[str, object]) -> conveyor.Run:
    event_id = app.send(name, data)
    app.drain(timeout=10)
    [run] = app.runs_for_event(event_id)
    return run


# --- help and usage ---------------------------------------------------------------------


def test_help_lists_commands(cli: Run) -> None:
    code, out, _ = cli("--help", database=False)
    assert code == 0
    for command in ("dev", "worker", "send", "runs", "dlq", "migrate"):
        assert command in out


def test_usage_error_exits_2(cli: Run) -> None:
    code, _, err = cli("runs", "frobnicate")
    assert code == 2
    assert "invalid choice" in err


# --- send and migrate ---------------------------------------------------------------------


def test_migrate_creates_the_database(cli: Run, url: str) -> None:
    assert not database_exists(url)
    code, out, _ = cli("migrate")
    assert code == 0
    assert "up to date" in out
    assert database_exists(url)
    assert cli("migrate")[0] == 0  # idempotent


def test_send_prints_the_event_id_and_starts_the_function(cli: Run, app: conveyor.Conveyor) -> None:
    code, out, err = cli("send", "greet.requested", "--data", '{"name": "ada"}', "--id", "evt-1")
    assert (code, out.strip(), err) == (0, "evt-1", "")
    app.drain(timeout=10)
    [run] = app.runs_for_event("evt-1")
    assert run.status == "completed"
    assert run.output == {"greeting": "hello ada"}

    # The id is the idempotency key: a second send is accepted and ignored.
    assert cli("send", "greet.requested", "--id", "evt-1")[:2] == (0, "evt-1\n")
    app.drain(timeout=10)
    assert len(app.runs_for_event("evt-1")) == 1


def test_send_generates_an_id(cli: Run) -> None:
    code, out, _ = cli("send", "nothing.listens")
    assert code == 0
    assert len(out.strip()) > 0
    assert len(out.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [("{bad", "not valid JSON"), ("[1, 2]", "JSON object"), ('"text"', "JSON object")],
)
def test_send_rejects_bad_data_and_stores_nothing(cli: Run, url: str, data: str, needle: str) -> None:
    code, out, err = cli("send", "greet.requested", "--data", data)
    assert out == ""
    assert_user_error(code, err, "--data", needle)
    assert not database_exists(url)


# --- runs -------------------------------------------------------------------------------


def test_runs_list_and_show(cli: Run, app: conveyor.Conveyor) -> None:
    run = send(app, "greet.requested", {"name": "grace"})
    code, out, _ = cli("runs", "list")
    assert code == 0
    assert run.id in out and "greet" in out and "completed" in out

    code, out, _ = cli("runs", "list", "--status", "failed")
    assert (code, run.id in out) == (0, False)
    assert "no runs" in out

    code, out, _ = cli("runs", "show", run.id)
    assert code == 0
    for needle in (run.id, "greet", "completed", "make-greeting", "hello grace", "attempts"):
        assert needle in out

    code, out, _ = cli("runs", "show", run.id, "--json")
    shown = json.loads(out)
    assert shown["id"] == run.id
    assert [(s["id"], s["status"], s["attempts"]) for s in shown["steps"]] == [("make-greeting", "completed", 1)]


def test_runs_list_filters_by_function(cli: Run, app: conveyor.Conveyor, tmp_path: Path) -> None:
    greet = send(app, "greet.requested", {})
    flagged = send(app, "flagged.requested", {"flag": str(tmp_path / "missing")})
    code, out, _ = cli("runs", "list", "--function", "flagged", "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == [flagged.id]
    assert greet.id not in out


def test_runs_show_lays_steps_on_a_timeline_and_prints_the_log(cli: Run, app: conveyor.Conveyor) -> None:
    run = send(app, "logged.requested", {"who": "ada"})
    code, out, _ = cli("runs", "show", run.id)
    assert code == 0
    assert "timeline" in out
    rows = {name: line for line in out.splitlines() for name in ("first", "second") if f" {name} " in line}
    assert set(rows) == {"first", "second"}
    assert all("━" in line for line in rows.values()), out  # each step has its bar
    assert out.index("starting for ada") < out.index("between the steps") < out.index("all done")
    for level in ("INFO", "WARNING", "ERROR"):
        assert level in out

    code, out, _ = cli("runs", "show", run.id, "--json")
    logs = json.loads(out)["logs"]
    assert [(r["level"], r["message"]) for r in logs] == [
        ("INFO", "starting for ada"), ("WARNING", "between the steps"), ("ERROR", "all done")]
    assert [r["step_id"] for r in logs] == [None, None, None]  # logged between steps, not inside one


def test_timeline_bars_sit_where_the_steps_ran() -> None:
    from datetime import UTC, datetime, timedelta

    from conveyor.cli.render import timeline_bar
    from conveyor.types import StepRecord

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    end = t0 + timedelta(seconds=10)
    early = StepRecord("a", "run", "completed", 1, None, None, t0, t0 + timedelta(seconds=2))
    late = StepRecord("b", "sleep", "completed", 1, None, None, t0 + timedelta(seconds=5), end)
    instant = StepRecord("c", "run", "completed", 1, None, None, end, end)
    going = StepRecord("d", "run", "running", 1, None, None, t0 + timedelta(seconds=8), None)
    assert timeline_bar(early, t0, end, width=10).plain == "━━        "
    assert timeline_bar(late, t0, end, width=10).plain == "     ━━━━━"
    assert timeline_bar(instant, t0, end, width=10).plain == "         ━"  # at least one character
    assert timeline_bar(going, t0, end, width=10).plain == "        ━━"  # runs on to the axis's end
    not_started = StepRecord("e", "run", "queued", 0, None, None, None, None)
    assert timeline_bar(not_started, t0, end, width=10).plain == " " * 10


def test_runs_list_since_and_event(cli: Run, app: conveyor.Conveyor) -> None:
    greet = send(app, "greet.requested", {})
    other = send(app, "logged.requested", {})
    code, out, _ = cli("runs", "list", "--since", "1h", "--json")
    assert code == 0 and {r["id"] for r in json.loads(out)} == {greet.id, other.id}
    code, out, _ = cli("runs", "list", "--since", "2999-01-01T00:00:00", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = cli("runs", "list", "--event", greet.event_id, "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [greet.id]
    for bad in ("yesterday", "-5m", "12x"):
        code, _, err = cli("runs", "list", "--since", bad)
        assert code == 2 and "--since" in err, err


@pytest.mark.parametrize("command", ["show", "cancel", "replay", "watch"])
def test_unknown_run_is_one_line_error(cli: Run, command: str) -> None:
    code, out, err = cli("runs", command, "no-such-run")
    assert out == ""
    assert_user_error(code, err, "no-such-run")


def test_cancel_a_sleeping_run(cli: Run, app: conveyor.Conveyor) -> None:
    run = send(app, "nap.requested", {})
    assert run.status == "waiting"
    code, out, _ = cli("runs", "cancel", run.id)
    assert code == 0
    assert "cancelled" in out
    assert app.get_run(run.id).status == "cancelled"
    code, _, err = cli("runs", "cancel", run.id)  # a finished run cannot be cancelled
    assert_user_error(code, err)


def test_replay_continues_from_the_failed_step(cli: Run, app: conveyor.Conveyor, tmp_path: Path) -> None:
    flag, counter = tmp_path / "flag", tmp_path / "counter"
    run = send(app, "flagged.requested", {"flag": str(flag), "counter": str(counter)})
    assert run.status == "failed"
    code, out, _ = cli("runs", "show", run.id)
    assert code == 0 and "NonRetriableError" in out and "failed" in out

    flag.touch()
    code, out, _ = cli("runs", "replay", run.id)
    assert code == 0 and run.id in out
    app.drain(timeout=10)
    replayed = app.get_run(run.id)
    assert replayed.status == "completed"
    assert [(s.id, s.status) for s in replayed.steps] == [
        ("before", "completed"),
        ("check-flag", "completed"),
    ]
    assert counter.read_text() == "x"  # the memoized step did not run again


def test_watch_exits_0_when_completed_and_1_when_failed(cli: Run, app: conveyor.Conveyor, tmp_path: Path) -> None:
    done = send(app, "greet.requested", {})
    code, out, _ = cli("runs", "watch", done.id)
    assert code == 0 and "completed" in out

    failed = send(app, "flagged.requested", {"flag": str(tmp_path / "missing")})
    code, out, _ = cli("runs", "watch", failed.id)
    assert code == 1 and "failed" in out


# --- dead letters -------------------------------------------------------------------------


def test_dlq_list_and_redrive(cli: Run, app: conveyor.Conveyor, tmp_path: Path) -> None:
    assert "no dead letters" in cli("dlq", "list")[1]
    flag = tmp_path / "flag"
    dead = send(app, "flagged.requested", {"flag": str(flag)})
    ok = send(app, "greet.requested", {})

    code, out, _ = cli("dlq", "list")
    assert code == 0
    assert dead.id in out and ok.id not in out and "NonRetriableError" in out

    flag.touch()
    code, out, _ = cli("dlq", "redrive", dead.id)
    assert code == 0
    assert "redriven 1 run" in out and dead.id in out
    app.drain(timeout=10)
    assert app.get_run(dead.id).status == "completed"
    assert "no dead letters" in cli("dlq", "list")[1]


def test_dlq_redrive_all(cli: Run, app: conveyor.Conveyor, tmp_path: Path) -> None:
    runs = [send(app, "flagged.requested", {"flag": str(tmp_path / "flag")}) for _ in range(2)]
    (tmp_path / "flag").touch()
    code, out, _ = cli("dlq", "redrive")
    assert code == 0 and "redriven 2 runs" in out
    app.drain(timeout=10)
    assert {app.get_run(r.id).status for r in runs} == {"completed"}


# --- loading MODULE:APP -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("nonexistent_mod:app", "nonexistent_mod"),
        ("nonexistent_dir/jobs.py:app", "no such file"),
        (f"{APPS / 'basic.py'}:missing", "no attribute 'missing'"),
        (f"{APPS / 'basic.py'}:not_an_app", "not a conveyor.Conveyor"),
    ],
)
def test_worker_with_a_bad_app_spec_fails_clearly(cli: Run, spec: str, needle: str) -> None:
    code, out, err = cli("worker", spec, database=False)
    assert out == ""
    assert_user_error(code, err, needle)


def test_worker_refuses_an_app_bound_to_another_database(cli: Run, url: str) -> None:
    code, _, err = cli("worker", f"{APPS / 'fixed_db.py'}:app")
    assert_user_error(code, err, "fixed-elsewhere.db", "--database")
    assert not database_exists(url)


def test_dev_and_server_help_list_the_http_options(cli: Run) -> None:
    for command in ("dev", "server"):
        code, out, _ = cli(command, "--help", database=False)
        assert code == 0
        for option in ("--port", "--host", "--event-key", "--api-token", "--signing-key"):
            assert option in out


def test_server_refuses_a_public_address_without_keys(cli: Run) -> None:
    code, _, err = cli("server", "--host", "0.0.0.0", "--port", "0")
    assert_user_error(code, err, "without event keys or API tokens")


def test_dev_with_a_bad_app_spec_fails_clearly(cli: Run) -> None:
    code, _, err = cli("dev", "nonexistent_mod:app", database=False)
    assert_user_error(code, err, "nonexistent_mod")


# --- the installed entry point, with a real worker process ------------------------------


def conveyor_command() -> list[str]:
    script = Path(sys.executable).with_name("conveyor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.cli.main"]


def test_sigterm_while_the_worker_loads_its_app_still_exits_0(url: str, tmp_path: Path,
                                                              wait_until: Callable[..., object]) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "SLOW_IMPORT_STARTED": str(started),
           "SLOW_IMPORT_RELEASE": str(release)}
    worker = subprocess.Popen([*conveyor_command(), "worker", f"{APPS / 'slow_import.py'}:app", "--database", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(started.exists, timeout=30, message="the worker to start importing the app")
        worker.send_signal(signal.SIGTERM)  # before the worker has started serving
        release.touch()
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "Traceback" not in err


def test_entry_point_worker_runs_jobs_and_stops_cleanly_on_sigterm(
    url: str, app: conveyor.Conveyor, wait_until: Callable[..., object]
) -> None:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url}
    unknown = subprocess.run(
        [*conveyor_command(), "runs", "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: ") and "Traceback" not in unknown.stderr

    worker = subprocess.Popen(
        [*conveyor_command(), "worker", BASIC, "--database", url, "--concurrency", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        sent = subprocess.run(
            [*conveyor_command(), "send", "greet.requested", "--data", '{"name": "linus"}'],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        event_id = sent.stdout.strip()

        def completed() -> bool:
            runs = app.runs_for_event(event_id)
            return bool(runs) and runs[0].status == "completed"

        wait_until(completed, timeout=30, message="the worker to complete the run")
        assert app.runs_for_event(event_id)[0].output == {"greeting": "hello linus"}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert "greet" in err  # the banner names the functions
