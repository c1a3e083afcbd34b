"""Several processes on one database, on every backend: worker processes share the
work, many processes create the schema at once, the database comes from the
environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import conveyor

from .helpers import only_run


def _use(app) -> str:
    @app.function(on="shared.touch")
    def touch(ctx):
        return ctx.step.run("touch", lambda: "ok")

    event_id = app.send("shared.touch")
    app.drain(timeout=10)
    assert only_run(app, event_id).status == "completed"
    return event_id


def test_database_from_environment(db_url, monkeypatch) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    app = conveyor.Conveyor("env")
    try:
        event_id = _use(app)
    finally:
        app.close()
    # the run is in the database the variable named, seen from an app given it explicitly
    explicit = conveyor.Conveyor("env", database=db_url)
    try:
        assert only_run(explicit, event_id).output == "ok"
    finally:
        explicit.close()


WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import conveyor

    url, ready = sys.argv[1], sys.argv[2]
    app = conveyor.Conveyor("test", database=url)

    @app.function(on="shared.whoami")
    def whoami(ctx):
        def body():
            threading.Event().wait(0.05)
            return os.getpid()
        return ctx.step.run("whoami", body)

    worker = app.worker(concurrency=1)
    worker.start()
    open(ready, "w").close()
    sys.stdin.read()  # run until the test closes our stdin
    worker.stop(grace=5)
    app.close()
    """
)


def test_two_worker_processes_share_one_database(app, db_url, tmp_path, wait_until) -> None:
    @app.function(on="shared.whoami")
    def whoami(ctx):  # registered here too, so that this process can route the events
        raise AssertionError("the test process must not run this")

    procs = []
    ready_files = [tmp_path / f"ready-{i}" for i in range(2)]
    errs = [tmp_path / f"worker-{i}.err" for i in range(2)]

    def stderr() -> str:
        return "\n".join(f"--- {e.name}\n{e.read_text()[-2000:]}" for e in errs if e.exists())

    try:
        for ready, err in zip(ready_files, errs, strict=True):
            with open(err, "wb") as err_file:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", WORKER_SCRIPT, db_url, str(ready)],
                        stdin=subprocess.PIPE,
                        stderr=err_file,
                        env={**os.environ},
                    )
                )
        wait_until(
            lambda: all(r.exists() for r in ready_files),
            timeout=30,
            message=lambda: f"both worker processes to start\n{stderr()}",
        )
        ids = [app.send("shared.whoami", {"i": i}) for i in range(30)]
        wait_until(
            lambda: all(app.runs_for_event(e) and only_run(app, e).status == "completed" for e in ids),
            timeout=60,
            message=lambda: f"all runs to complete\n{stderr()}",
        )
        pids = {only_run(app, e).output for e in ids}
        assert pids == {p.pid for p in procs}, f"outputs came from {pids}"
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], stderr()


SCHEMA_RACE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import conveyor
    url, gate, event_id = sys.argv[1], sys.argv[2], sys.argv[3]
    open(os.path.join(gate, "ready-" + event_id), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(gate, "go")):  # released together by the test
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.001)
    app = conveyor.Conveyor("race", database=url)
    app.send("shared.race", {"from": event_id}, id=event_id)
    app.close()
    """
)


def test_many_processes_creating_the_schema_at_once(db_url, tmp_path, wait_until) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEMA_RACE_SCRIPT, db_url, str(gate), f"evt-{i}"],
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    # all four have imported and are waiting: release them at once into their first use
    wait_until(lambda: len(list(gate.glob("ready-*"))) == 4, timeout=60, message="4 processes ready")
    (gate / "go").touch()
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            errors.append(err.decode())
    assert errors == []

    app = conveyor.Conveyor("race", database=db_url)
    try:

        @app.function(on="shared.race")
        def raced(ctx):
            return ctx.event.data["from"]

        for i in range(4):  # every event was stored: a resend with its id is ignored
            app.send("shared.race", {"from": "resend"}, id=f"evt-{i}")
        app.drain(timeout=10)
        for i in range(4):
            assert app.runs_for_event(f"evt-{i}") == []
        # the schema works: a new event does start a run
        fresh = app.send("shared.race", {"from": "fresh"})
        app.drain(timeout=10)
        assert only_run(app, fresh).output == "fresh"
    finally:
        app.close()
