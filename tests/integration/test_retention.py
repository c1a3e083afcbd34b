"""Retention: ended runs are pruned after the app's retention; dead letters stay until purged."""

from __future__ import annotations

import pytest

import conveyor


def test_prune_removes_ended_runs_past_retention_and_keeps_dead_letters(make_app) -> None:
    app = make_app(retention=0.000_001)

    @app.function(on="keep.ok")
    def ok(ctx):
        return ctx.step.run("s", lambda: 1)

    @app.function(on="keep.bad", retries=0)
    def bad(ctx):
        ctx.step.run("s", lambda: 1 / 0)

    ok_event = app.send("keep.ok")
    bad_event = app.send("keep.bad")
    app.drain(timeout=10)
    [ok_run] = app.runs_for_event(ok_event)
    [bad_run] = app.runs_for_event(bad_event)
    assert (ok_run.status, bad_run.status) == ("completed", "failed")

    assert app.prune() == 1
    with pytest.raises(conveyor.NotFound):
        app.get_run(ok_run.id)
    assert [r.id for r in app.dead_letters()] == [bad_run.id]

    with pytest.raises(conveyor.NotFound):
        app.purge_dead_letters([ok_run.id])  # pruned already
    assert app.purge_dead_letters([bad_run.id]) == 1
    assert app.dead_letters() == []


def test_no_retention_keeps_everything(make_app) -> None:
    app = make_app(retention=None)

    @app.function(on="keep.all")
    def f(ctx):
        return 1

    event_id = app.send("keep.all")
    app.drain(timeout=10)
    assert app.prune() == 0
    assert app.runs_for_event(event_id)[0].status == "completed"


def test_bad_retention_is_a_config_error(tmp_path) -> None:
    with pytest.raises(conveyor.ConfigError):
        conveyor.Conveyor("x", database=f"sqlite:///{tmp_path}/x.db", retention=-1)
