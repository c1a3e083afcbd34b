#!/usr/bin/env python
"""What observability costs on the hot path, in CPU time (robust on a shared machine).

    .venv/bin/python bench/observability.py                  # both parts, about 2 minutes
    .venv/bin/python bench/observability.py --part micro     # the in-process part only
    .venv/bin/python bench/observability.py --base REV       # compare the worker with another revision

1. **micro** — per one-step run, what the engine adds around storage: reporting the claim
   and the two commits of each run (the step's checkpoint, then the outcome) with nobody
   subscribed and with the Prometheus metrics attached; what an untraced invocation does
   for tracing (the run span and step span checks); and, for scale, the whole invocation
   of a one-step function in the executor.
2. **worker** — one real ``conveyor worker`` process (``bench/apps.py``, one-step runs,
   SQLite) drains N events; its CPU microseconds per run, in the ``--base`` revision,
   in this one, and in this one with ``--metrics-port`` (metrics attached). Median of
   ``--repeat`` rounds, each on a fresh database. This compares whole revisions (everything
   committed in between), on a machine whose other load shows as noise: the micro figures
   isolate observability.

The ``--base`` revision is extracted with ``git archive`` into a temporary directory and
put first on ``PYTHONPATH``; the working tree is not touched.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MICRO = textwrap.dedent("""
    import json, time
    from conveyor.records import Completed, StepWrite
    from conveyor.storage.base import ClaimedJob, JobResult

    N, ROUNDS = 1000, 200
    jobs = [ClaimedJob(f"r{i}", 1, "bench-one", "default", f"e{i}", "bench.one", "{}", 0.0, {}, None, first=True)
            for i in range(N)]
    steps = [JobResult(f"r{i}", 1, "bench-one", steps=[StepWrite("a", "run", "completed", 1, 1, "null",
             started_at=1.0, ended_at=1.0005)]) for i in range(N)]
    finals = [JobResult(f"r{i}", 1, "bench-one", outcome=Completed("null")) for i in range(N)]
    ok = [True] * N

    def per_run(fn, rounds):
        # CPU microseconds per run of fn (which handles N runs), best of 5
        fn()
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for _ in range(rounds):
                fn()
            best = min(best, (time.process_time() - t) / rounds / N * 1e6)
        return best

    out = {}
    try:
        from conveyor.engine.reporting import report_claims, report_commit
        from conveyor.observability.hooks import Hooks
        from conveyor.observability.metrics import Metrics
        hooks = Hooks()
        def report():
            report_claims(hooks, jobs); report_commit(hooks, steps, ok); report_commit(hooks, finals, ok)
        out["report, nobody subscribed"] = per_run(report, 200)
        Metrics(process=False).attach(hooks)
        out["report, metrics attached"] = per_run(report, 200)
    except ImportError:  # the base revision has no reporting
        pass

    from conveyor.executor.invocation import Invocation
    from conveyor.observability import tracing
    from conveyor.types import Backoff, Event, StepKind
    def fn(ctx):
        ctx.step.run("a", lambda: None)
    event = Event(name="bench.one", data={}, id="e")
    def new(i):
        return Invocation(fn=fn, function_id="bench-one", run_id=f"r{i}", event=event, memo={}, retries=0,
                          backoff=Backoff(), sink=lambda w: None, new_id=lambda: "x")
    def invocations():
        for i in range(N):
            new(i).run()
    out["one-step invocation"] = per_run(invocations, 3)
    inv = new(0)
    def span_checks():  # what an untraced one-step invocation does for tracing: one run, one step
        for _ in range(N):
            if inv._run_span() is tracing.NO_SPAN:
                with inv.step_span("a", StepKind.RUN):
                    pass
    def empty():
        for _ in range(N):
            pass
    out["untraced span checks"] = per_run(span_checks, 50) - per_run(empty, 50)
    print(json.dumps(out))
""")


def extract(rev: str, into: Path) -> Path:
    tar = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into / "src"


def env_for(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def micro() -> None:
    import json

    out = subprocess.run([sys.executable, "-c", MICRO], env=env_for(None), cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    row = json.loads(out)
    print("micro (CPU microseconds per one-step run, best of 5 rounds of 1,000 runs)")
    for key in ("report, nobody subscribed", "report, metrics attached", "untraced span checks",
                "one-step invocation"):
        print(f"  {key:<32} {row[key]:7.2f}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_once(src: Path | None, extra: list[str], n: int, tmp: Path) -> tuple[float, float]:
    """(worker CPU seconds, wall seconds) to run ``n`` one-step runs."""
    db = tmp / f"w{time.monotonic_ns()}.db"
    url = f"sqlite:///{db}"
    env = {**env_for(src), "CONVEYOR_DATABASE_URL": url}
    load = ("import sys; sys.path.insert(0, 'bench'); from apps import app; from conveyor import Event\n"
            f"for s in range(0, {n}, 1000):\n"
            f"    app.send_many([Event(name='bench.one') for _ in range(s, min({n}, s + 1000))])\n")
    subprocess.run([sys.executable, "-c", load], env=env, cwd=ROOT, check=True)
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "conveyor.cli.main", "worker", "bench/apps.py:app",
                             "--concurrency", "32", *extra], env=env, cwd=ROOT, stdout=log, stderr=log)
    t0 = time.perf_counter()
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            while conn.execute("SELECT count(*) FROM conveyor_runs WHERE status = 'completed'").fetchone()[0] < n:
                if proc.poll() is not None:
                    raise SystemExit(f"the worker exited with {proc.returncode}; see {tmp / 'worker.log'}")
                time.sleep(0.05)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    return cpu, wall


def worker(base: Path, n: int, repeat: int, tmp: Path) -> None:
    configs = [("base", base, []), ("this, no metrics", None, []),
               ("this, --metrics-port", None, ["--metrics-port", "0"])]
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in configs}
    for _ in range(repeat):  # interleaved, so that a noisy neighbour hits every configuration alike
        for label, src, extra in configs:
            results[label].append(drain_once(src, extra, n, tmp))
    print(f"worker (one process, {n:,} one-step runs on SQLite, median of {repeat})")
    for label, rounds in results.items():
        cpu = statistics.median(c for c, _ in rounds)
        wall = statistics.median(w for _, w in rounds)
        each = " ".join(f"{1e6 * c / n:.0f}" for c, _ in rounds)
        print(f"  {label:<22} {1e6 * cpu / n:6.1f} us CPU per run   {n / wall:7,.0f} runs/s wall   (rounds: {each})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("micro", "worker", "both"), default="both")
    p.add_argument("--base", default="013cba9", help="the revision to compare with (default: before observability)")
    p.add_argument("--n", type=int, default=20000, help="runs per worker round")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-obs-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.part in ("micro", "both"):
            micro()
        if args.part in ("worker", "both"):
            worker(extract(args.base, tmp), args.n, args.repeat, tmp)


if __name__ == "__main__":
    main()
