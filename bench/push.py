#!/usr/bin/env python
"""Push delivery throughput next to pull, measured the same way (see bench/run.py).

    .venv/bin/python bench/push.py                       # N=20000, one- and three-step, both backends
    .venv/bin/python bench/push.py --quick               # N=2000, one round
    .venv/bin/python bench/push.py --backend sqlite --batch 8,16,32 --concurrency 32,64

Each scenario gets a fresh database and N events loaded before anything runs. Then:

* **pull**: one ``conveyor worker bench/apps.py:app`` process (bench/run.py's scenario);
* **push**: one endpoint process (``app.serve()`` of the same bench/apps.py under uvicorn,
  started and warm beforehand, registered in the database) and one dispatcher process (the
  engine and :class:`~conveyor.worker.dispatcher.Dispatcher`, as ``conveyor server`` runs
  it, without the HTTP API), started at t=0.

The rate is N / (time from starting the worker or dispatcher to N runs completed), read
from the database every 20 ms; ``steady`` is the rate between 5 % and 95 % completed.
Target: push at least half of pull. Every process runs on the same machine as the
database (and PostgreSQL), so they compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as pull  # noqa: E402  (bench/run.py: databases, loading, pull scenarios)

KEY = "bench-push-signing-key-0123456789"
FUNCTIONS = ("bench-one", "bench-three", "bench-latency")


@dataclass
class PushRun:
    backend: str
    kind: str
    n: int
    batch: int
    concurrency: int
    elapsed_s: float = math.nan
    rate: float = math.nan
    steady_rate: float = math.nan
    first_s: float = math.nan
    dispatcher_cpu_pct: float = math.nan
    endpoint_cpu_pct: float = math.nan
    pg_cpu_pct: float = math.nan
    requests: int = 0
    error: str | None = None
    repeats: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- the two processes


def endpoint_main(args: argparse.Namespace) -> int:
    """``--endpoint``: serve bench/apps.py's functions with ``app.serve()`` until SIGTERM."""
    import uvicorn

    os.environ.setdefault("CONVEYOR_DATABASE_URL", "sqlite:////nonexistent/never-opened.db")
    app = pull.load_app(os.environ["CONVEYOR_DATABASE_URL"], args.style)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app.serve(signing_key=KEY, threads=args.threads), log_level="warning", lifespan="off",
                            loop="uvloop", http="httptools", access_log=False)
    print(f"endpoint listening on http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def dispatcher_main(args: argparse.Namespace) -> int:
    """``--dispatcher``: the server's push dispatcher over ``--database`` until SIGTERM."""
    import conveyor
    from conveyor.worker.dispatcher import Dispatcher

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = conveyor.Conveyor("bench-dispatcher", database=args.database)
    dispatcher = Dispatcher(server._engine(), signing_key=KEY, batch=args.batch_size).start()
    print("dispatcher started", flush=True)
    stop.wait()
    dispatcher.stop(grace=5)
    server.close()
    return 0


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=pull.ROOT)

    def wait_line(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.proc.args} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def cpu_s(self) -> float:
        return sum(pull._proc_cpu_s(p) for p in [self.proc.pid, *pull._children(self.proc.pid)])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


# --------------------------------------------------------------------------- the push scenario


def run_push(backend: str, kind: str, n: int, batch: int, concurrency: int, args: argparse.Namespace,
             tmp: Path) -> PushRun:
    from conveyor.storage.base import Endpoint
    from conveyor.storage.factory import open_storage

    res = PushRun(backend, kind, n, batch, concurrency)
    tag = f"push-{backend}-{kind}-b{batch}-c{concurrency}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=tmp))  # a fresh SQLite file every round
    db = pull.open_db(backend, tag, tmp, args)
    procs: list[Proc] = []
    try:
        app = pull.load_app(db.url, args.style)
        try:
            pull._send_bulk(app, f"bench.{kind}", n)
        finally:
            app.close()
        env = dict(os.environ, CONVEYOR_DATABASE_URL=db.url, BENCH_STYLE=args.style, PYTHONUNBUFFERED="1")
        me = [sys.executable, str(Path(__file__).resolve())]
        endpoint = Proc([*me, "--endpoint", "--threads", str(args.threads), "--style", args.style], env,
                        tmp / f"{tag}-endpoint.log")
        procs.append(endpoint)
        url = endpoint.wait_line("endpoint listening on ").rsplit(" ", 1)[1]
        storage = open_storage(db.url)
        storage.endpoint_register(Endpoint(url, "default", FUNCTIONS, concurrency=concurrency, timeout=60.0))
        storage.close()
        db.start_cpu()
        ep0 = endpoint.cpu_s()
        t0 = time.perf_counter()
        dispatcher = Proc([*me, "--dispatcher", "--database", db.url, "--batch-size", str(batch)], env,
                          tmp / f"{tag}-dispatcher.log")
        procs.append(dispatcher)
        samples = _wait_completed(db.progress, n, t0, procs, args.stall, res)
        wall = time.perf_counter() - t0
        res.dispatcher_cpu_pct = round(100 * dispatcher.cpu_s() / wall)
        res.endpoint_cpu_pct = round(100 * (endpoint.cpu_s() - ep0) / wall)
        if backend == "postgres":
            res.pg_cpu_pct = round(100 * db.server_cpu_s() / wall)
        if res.error is None:
            _rates(res, samples, n)
    finally:
        for p in reversed(procs):
            p.stop()
        db.close()
        if res.error:
            for p in procs:
                print(f"--- {p.log} ---\n{p.log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
    return res


def _wait_completed(progress: Any, n: int, t0: float, procs: list[Proc], stall: float,
                    res: PushRun) -> list[tuple[float, int]]:
    samples: list[tuple[float, int]] = []
    last, last_change = -1, t0
    while True:
        time.sleep(pull.POLL)
        now = time.perf_counter()
        done = progress.completed()
        samples.append((now - t0, done))
        if done >= n:
            return samples
        if done != last:
            last, last_change = done, now
        if any(p.proc.poll() is not None for p in procs):
            res.error = "a process exited"
            return samples
        if now - last_change > stall:
            res.error = f"no progress for {stall:.0f} s ({done}/{n})"
            return samples


def _rates(res: PushRun, samples: list[tuple[float, int]], n: int) -> None:
    res.elapsed_s = samples[-1][0]
    res.rate = n / res.elapsed_s
    res.first_s = next(t for t, c in samples if c > 0)
    lo = next((t, c) for t, c in samples if c >= 0.05 * n)
    hi = next((t, c) for t, c in samples if c >= 0.95 * n)
    if hi[0] > lo[0]:
        res.steady_rate = (hi[1] - lo[1]) / (hi[0] - lo[0])


def median(results: list[PushRun]) -> PushRun:
    bad = [r for r in results if r.error]
    if bad:
        return bad[0]
    ordered = sorted(results, key=lambda r: r.rate)
    med = ordered[(len(ordered) - 1) // 2]
    med.repeats = [r.rate for r in results]
    return med


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dispatcher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--database", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help="sqlite,postgres (default: both if PostgreSQL answers)")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--quick", action="store_true", help="N=2000, one round")
    p.add_argument("--repeat", type=int, default=3, help="rounds of each scenario (median shown)")
    p.add_argument("--scenarios", default="one,three")
    p.add_argument("--batch", default="32", help="invocations per request, comma-separated values to compare")
    p.add_argument("--concurrency", default="32", help="the endpoint's concurrency (and pull's), comma-separated")
    p.add_argument("--threads", type=int, default=32, help="the endpoint's threads for def functions")
    p.add_argument("--style", default="sync", choices=("sync", "async"))
    p.add_argument("--no-pull", action="store_true", help="skip the pull baseline")
    p.add_argument("--stall", type=float, default=60.0)
    p.add_argument("--pg-url", default=pull.PG_URL)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--pg-analyze", action="store_true")
    p.add_argument("--json", default=None, help="write every figure to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeat = 2000, 1
    args.profile_rate, args.profile_mode = 100, "cpu"  # (bench/run.py's throughput scenario reads them)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.endpoint:
        return endpoint_main(args)
    if args.dispatcher:
        return dispatcher_main(args)
    backends = args.backend.split(",") if args.backend else (
        ["sqlite", "postgres"] if pull.pg_reachable(args.pg_url) is None else ["sqlite"])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-push-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for backend in backends:
            for kind in args.scenarios.split(","):
                for conc in (int(c) for c in args.concurrency.split(",")):
                    if not args.no_pull:
                        rounds = [_pull(backend, kind, conc, args, tmp) for _ in range(args.repeat)]
                        med = pull.median_of(rounds)
                        rows.append({"mode": "pull", "backend": backend, "kind": kind, "concurrency": conc,
                                     "batch": None, "rate": med.rate, "steady": med.steady_rate,
                                     "repeats": med.repeats, "cpu": med.cpu_pct, "pg_cpu": med.server_cpu_pct,
                                     "error": med.error})
                        _print(rows[-1])
                    for batch in (int(b) for b in args.batch.split(",")):
                        prs = [pull.with_retries("push", args.pg_url, run_push, backend, kind, args.n, batch, conc,
                                                 args, tmp) for _ in range(args.repeat)]
                        m = median(prs)
                        rows.append({"mode": "push", "backend": backend, "kind": kind, "concurrency": conc,
                                     "batch": batch, "rate": m.rate, "steady": m.steady_rate, "repeats": m.repeats,
                                     "cpu": [m.dispatcher_cpu_pct, m.endpoint_cpu_pct], "pg_cpu": m.pg_cpu_pct,
                                     "error": m.error})
                        _print(rows[-1])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": pull.machine_info(Path(tempfile.gettempdir())),
                                               "args": {k: v for k, v in vars(args).items() if k != "json"},
                                               "rows": rows}, indent=2, default=str))
    _summary(rows)
    return 1 if any(r["error"] for r in rows) else 0


def _pull(backend: str, kind: str, concurrency: int, args: argparse.Namespace, tmp: Path) -> Any:
    """bench/run.py's scenario with one worker process (it names its SQLite file by backend, kind
    and workers only: each round gets a directory of its own)."""
    saved, args.concurrency = args.concurrency, concurrency  # bench/run.py reads it as the worker's
    where = Path(tempfile.mkdtemp(prefix=f"pull-c{concurrency}-", dir=tmp))
    try:
        return pull.with_retries("pull", args.pg_url, pull.run_throughput, backend, kind, args.n, 1, args, where)
    finally:
        args.concurrency = saved


def _print(row: dict[str, Any]) -> None:
    spread = "..".join(f"{v:,.0f}" for v in (min(row["repeats"]), max(row["repeats"]))) if row["repeats"] else ""
    batch = "" if row["batch"] is None else f" batch {row['batch']}"
    print(f"{row['backend']:8} {row['kind']:5}-step {row['mode']:4} conc {row['concurrency']}{batch}: "
          f"{row['rate']:,.0f} runs/s ({spread}), steady {row['steady']:,.0f}, CPU % {row['cpu']}, "
          f"PG CPU % {row['pg_cpu']}" + (f"  ERROR {row['error']}" if row["error"] else ""), flush=True)


def _summary(rows: list[dict[str, Any]]) -> None:
    print("\npush / pull (median runs/s, end to end):")
    for r in rows:
        if r["mode"] != "push":
            continue
        base = next((p for p in rows if p["mode"] == "pull" and all(p[k] == r[k] for k in
                                                                      ("backend", "kind", "concurrency"))), None)
        if base and base["rate"] == base["rate"] and r["rate"] == r["rate"]:
            ratio = r["rate"] / base["rate"]
            verdict = "PASS" if ratio >= 0.5 else "MISS"
            print(f"  {r['backend']:8} {r['kind']:5}-step batch {r['batch']:>3} conc {r['concurrency']}: "
                  f"{r['rate']:,.0f} / {base['rate']:,.0f} = {ratio:.2f}  (target >= 0.50) {verdict}")


if __name__ == "__main__":
    sys.exit(main())

