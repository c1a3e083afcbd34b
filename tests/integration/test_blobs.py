"""Large outputs go to the blob store by reference and come back transparently."""

from __future__ import annotations

from pathlib import Path


def test_large_step_and_run_outputs_are_stored_by_reference(make_app, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    app = make_app(blob_dir=blobs, blob_threshold=1024)
    big = "x" * 50_000

    @app.function(on="blob.go")
    def producer(ctx):
        text = ctx.step.run("make", lambda: big)
        length = ctx.step.run("measure", lambda t: len(t), text)  # the memoized value is read back whole
        return {"text": text, "length": length}

    event_id = app.send("blob.go")
    app.drain(timeout=10)
    [run] = app.runs_for_event(event_id)
    run = app.get_run(run.id)
    assert run.status == "completed"
    assert run.output == {"text": big, "length": 50_000}
    assert run.steps[0].output == big
    stored = list(blobs.rglob("*.json"))
    assert len(stored) == 2  # the step output and the run output; small outputs stay in the row
    assert sum(p.stat().st_size for p in stored) > 100_000


def test_map_outputs_over_the_threshold_stream_back(make_app, tmp_path: Path) -> None:
    app = make_app(blob_dir=tmp_path / "blobs", blob_threshold=1024)

    @app.function()
    def page(ctx):
        return "y" * (2000 + ctx.event.data)

    @app.function(on="blob.map")
    def fan(ctx):
        pages = ctx.step.map("pages", page, range(5))
        return ctx.step.run("sizes", lambda ps: [len(p) for p in ps], pages)

    event_id = app.send("blob.map")
    app.drain(timeout=20)
    [run] = app.runs_for_event(event_id)
    assert app.get_run(run.id).output == [2000, 2001, 2002, 2003, 2004]
