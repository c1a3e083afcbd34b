"""The orchestration shared by the SQL backends, written once.

Each backend keeps its SQL in a ``queries.sql`` of named blocks and supplies the
few things that differ: how to open a transaction (and how durable it is), the
database clock, how a list is passed as a parameter, and how idle workers are
woken. Every state transition below runs inside one write transaction, fenced by
the job's lease token.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from conveyor.errors import NotFound
from conveyor.ids import id_floor, new_id
from conveyor.records import INTERNAL_PREFIX, Completed, Failed, MemoStep, NewChild, NewEvent, StepWrite, Suspended
from conveyor.storage.base import (
    ClaimedJob,
    DirectRun,
    Endpoint,
    EventCursor,
    EventRow,
    FunctionRow,
    FunctionSpec,
    FunctionStats,
    JobResult,
    PoolBacklog,
    RunFilter,
    RunRow,
    StepRow,
    Storage,
    WorkerRow,
)
from conveyor.storage.sql import load_migrations, split_statements

timezone_utc = UTC
FAR_FUTURE = 1e15  # run_at of a job that waits for something else to wake it
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _concurrency_group(fid: str, limit: int | None, key: str | None, data: str) -> str | None:
    if not limit:
        return None
    if not key:
        return fid
    value: Any = {"data": json.loads(data)}
    for part in key.removeprefix("event.").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return f"{fid}\x1f{_dumps(value)}"


def _plain(res: JobResult) -> bool:
    """A result the set-based path can write: checkpoints without side effects, completion, suspension."""
    if res.release or isinstance(res.outcome, Failed):
        return False
    return all(not w.events and not w.children and w.wait is None for w in res.steps)


def _step_row(run_id: str, w: StepWrite, now: float) -> tuple[Any, ...]:
    """A step's row. Its times, read off the worker's clock set to the database's, are kept at or
    before the commit's database time ``now``: that clock runs a little ahead on purpose (so timers
    are never early), and a step must not seem to end after the run that it ends."""
    started = None if w.started_at is None else min(w.started_at, now)
    ended = None if w.ended_at is None else min(w.ended_at, now)
    return (run_id, w.id, w.seq, w.kind, w.status, w.attempts, w.output,
            None if w.error is None else _dumps(w.error), w.wake_at, started, ended, w.children_total,
            w.children_created)


def _memo_step(r: Sequence[Any]) -> MemoStep:
    return MemoStep(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6], r[7], r[8], r[9], r[10])


class Tx:
    """One write transaction: its connection, the database time at its start, and caches
    so that a batch of a thousand events asks for each route once."""

    __slots__ = ("conn", "functions", "now", "routes", "waited_names", "woken")

    def __init__(self, conn: Any, now: float) -> None:
        self.conn = conn
        self.now = now
        self.routes: dict[str, list[tuple[str, str, int | None, str | None]]] = {}
        self.functions: dict[str, tuple[str, int | None, str | None, int] | None] = {}
        self.waited_names: set[str] | None = None
        self.woken: set[str] = set()


class RelationalStorage(Storage):
    q: dict[str, str]
    migrations_package: str
    integrity_errors: tuple[type[BaseException], ...] = ()
    _rotation = 0  # which pool a claim starts from (see jobs_claim)

    @abstractmethod
    def _write(self, *, durable: bool = True) -> AbstractContextManager[Tx]:
        """A write transaction; ``durable=False`` may skip the flush at commit (lease bookkeeping)."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reads."""

    @abstractmethod
    def _array(self, values: Sequence[str]) -> Any:
        """A list of strings as one query parameter."""

    @property
    def _bad_result_errors(self) -> tuple[type[BaseException], ...]:
        return (*self.integrity_errors, NotFound, ValueError)

    def _many(self, tx: Tx, name: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many parameter rows (pipelined where the driver can)."""
        tx.conn.cursor().executemany(self.q[name], rows)

    def _rows(self, name: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        with self._read() as conn:
            return list(conn.execute(self.q[name], params).fetchall())

    def _listing(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        """The rows of a listing query (a page of runs or events). A backend that caches query
        plans plans these for their actual parameters: which index fits depends on them."""
        return self._rows(name, params)

    def _row(self, name: str, params: Sequence[Any]) -> Any:
        with self._read() as conn:
            return conn.execute(self.q[name], params).fetchone()

    # ---- migrations ---------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self._write() as tx:
            tx.conn.execute(self.q["migrate_lock"])
            tx.conn.execute(self.q["migrations_table"])
            done = {row[0] for row in tx.conn.execute(self.q["migrations_applied"])}
            for version, name, sql in load_migrations(self.migrations_package):
                if version in done:
                    continue
                for statement in split_statements(sql):
                    tx.conn.execute(statement)
                tx.conn.execute(self.q["migration_record"], (version, name, tx.now))
                applied.append(version)
        return applied

    # ---- functions and events -----------------------------------------------------------------

    def functions_sync(self, specs: Sequence[FunctionSpec]) -> None:
        q = self.q
        with self._write() as tx:
            for s in specs:
                tx.conn.execute(q["function_upsert"], (
                    s.id, s.pool, s.retries, s.concurrency_limit, s.concurrency_key, s.cron,
                    int(s.has_on_failure), tx.now,
                ))
                tx.conn.execute(q["triggers_clear"], (s.id,))
                for name in s.triggers:
                    tx.conn.execute(q["trigger_insert"], (name, s.id))

    def events_send(self, events: Sequence[NewEvent]) -> list[bool]:
        """Set-based: the events in one statement where the backend can, then every run and job of
        the batch in one pipelined statement each, then the waits that the new events match."""
        with self._write() as tx:
            conn, q = tx.conn, self.q
            fresh = self._insert_events(tx, events)
            out: list[bool] = []
            new: list[NewEvent] = []
            runs, jobs = [], []
            for ev in events:
                if ev.id not in fresh:
                    out.append(False)
                    continue
                fresh.discard(ev.id)  # a repeated id in the batch is stored once
                out.append(True)
                new.append(ev)
                routes = tx.routes.get(ev.name)
                if routes is None:
                    routes = tx.routes[ev.name] = conn.execute(q["routes_for_event"], (ev.name,)).fetchall()
                for fid, pool, limit, key in routes:
                    run_id = new_id()
                    runs.append((run_id, fid, ev.id, pool, None, None, None, None, tx.now))
                    jobs.append((run_id, pool, fid, tx.now, _concurrency_group(fid, limit, key, ev.data), limit))
            if runs:
                self._many(tx, "run_insert", runs)
                self._many(tx, "job_insert", jobs)
            if new:
                if tx.waited_names is None:
                    tx.waited_names = {r[0] for r in conn.execute(q["waited_event_names"])}
                for ev in new:
                    if ev.name in tx.waited_names:
                        self._match_waits(tx, ev)
            return out

    def _insert_events(self, tx: Tx, events: Sequence[NewEvent]) -> set[str]:
        """Insert the events (known ids are ignored); returns the ids that were new."""
        fresh = set()
        for ev in events:
            if tx.conn.execute(self.q["event_insert"], (ev.id, ev.name, ev.data, ev.ts, ev.trace)).rowcount:
                fresh.add(ev.id)
        return fresh

    def runs_start(self, runs: Sequence[DirectRun]) -> None:
        with self._write() as tx:
            for r in runs:
                ev = r.event
                tx.conn.execute(self.q["event_insert"], (ev.id, ev.name, ev.data, ev.ts, ev.trace))
                self._create_run(tx, r.run_id, r.function_id, r.event.id, r.event.data, pool=r.pool)

    def _send(self, tx: Tx, ev: NewEvent) -> bool:
        conn, q = tx.conn, self.q
        if conn.execute(q["event_insert"], (ev.id, ev.name, ev.data, ev.ts, ev.trace)).rowcount == 0:
            return False
        routes = tx.routes.get(ev.name)
        if routes is None:
            routes = tx.routes[ev.name] = conn.execute(q["routes_for_event"], (ev.name,)).fetchall()
        for fid, pool, limit, key in routes:
            run_id = new_id()
            conn.execute(q["run_insert"], (run_id, fid, ev.id, pool, None, None, None, None, tx.now))
            cgroup = _concurrency_group(fid, limit, key, ev.data)
            conn.execute(q["job_insert"], (run_id, pool, fid, tx.now, cgroup, limit))
        if tx.waited_names is None:
            tx.waited_names = {r[0] for r in conn.execute(q["waited_event_names"])}
        if ev.name in tx.waited_names:
            self._match_waits(tx, ev)
        return True

    def _match_waits(self, tx: Tx, ev: NewEvent) -> None:
        conn, q = tx.conn, self.q
        data = None
        for run_id, step_id, path, value, created in conn.execute(q["waits_for_event"], (ev.name,)).fetchall():
            if created > ev.ts:
                continue
            if path is not None:
                if data is None:
                    data = {"id": ev.id, "name": ev.name, "data": json.loads(ev.data)}
                actual: Any = data
                for part in path.removeprefix("event.").split("."):
                    actual = actual.get(part) if isinstance(actual, dict) else None
                if _dumps(actual) != value:
                    continue
            if conn.execute(q["wait_match"], (ev.id, run_id, step_id)).rowcount:
                conn.execute(q["job_wake"], (tx.now, run_id, tx.now))

    def _function(self, tx: Tx, fid: str) -> tuple[str, int | None, str | None, int] | None:
        if fid not in tx.functions:
            row = tx.conn.execute(self.q["function_get"], (fid,)).fetchone()
            tx.functions[fid] = None if row is None else (row[1], row[2], row[3], row[4])
        return tx.functions[fid]

    def _create_run(
        self, tx: Tx, run_id: str, fid: str, event_id: str, data: str, *,
        parent: tuple[str, str, int] | None = None, failure_of: str | None = None, pool: str | None = None,
    ) -> None:
        fn = self._function(tx, fid)
        if fn is None:
            raise NotFound(f"unknown function {fid!r}: no app has registered it with this database")
        pool = pool or fn[0]
        p_id, p_step, index = parent or (None, None, None)
        cur = tx.conn.execute(self.q["run_insert"], (
            run_id, fid, event_id, pool, p_id, p_step, index, failure_of, tx.now))
        if cur.rowcount:
            self._enqueue(tx, run_id, fid, pool, data, tx.now)

    def _create_children(self, tx: Tx, parent_id: str, children: Sequence[NewChild]) -> None:
        """Create child runs in bulk (a map creates them a thousand at a time)."""
        events, runs, jobs = [], [], []
        for child in children:
            fn = self._function(tx, child.function_id)
            if fn is None:
                raise NotFound(f"unknown function {child.function_id!r}: no app has registered it with this database")
            pool, limit, key, _ = fn
            pool = child.pool or pool
            ev = child.event
            events.append((ev.id, ev.name, ev.data, ev.ts, ev.trace))
            runs.append((child.run_id, child.function_id, ev.id, pool, parent_id, child.parent_step, child.index,
                         None, tx.now))
            jobs.append((child.run_id, pool, child.function_id, tx.now,
                         _concurrency_group(child.function_id, limit, key, ev.data), limit))
        self._many(tx, "event_insert", events)
        self._many(tx, "run_insert", runs)
        self._many(tx, "job_insert", jobs)

    def _enqueue(self, tx: Tx, run_id: str, fid: str, pool: str, data: str, run_at: float) -> None:
        fn = self._function(tx, fid)
        limit, key = (fn[1], fn[2]) if fn else (None, None)
        cgroup = _concurrency_group(fid, limit, key, data)
        tx.conn.execute(self.q["job_insert"], (run_id, pool, fid, run_at, cgroup, limit))

    # ---- jobs ---------------------------------------------------------------------------------

    def jobs_claim(
        self, worker: str, pools: Sequence[str], functions: Sequence[str], limit: int, lease: float
    ) -> list[ClaimedJob]:
        q = self.q
        fns = self._array(functions)
        claimed: list[ClaimedJob] = []
        with self._write(durable=False) as tx:
            conn, now = tx.conn, tx.now
            picked: list[str] = []
            seen: set[str] = set()
            running: dict[str, int] = {}
            # Fair across pools: each pool first gets its share of the free slots (starting from a
            # rotating pool), then whatever is left goes to the pools that still have due jobs; a
            # worker serving a million-job "background" pool and a "live" one starves neither.
            self._rotation = (self._rotation + 1) % max(1, len(pools))
            order = list(pools[self._rotation:]) + list(pools[:self._rotation])
            share = max(1, limit // max(1, len(order)))
            passes = [(p, share) for p in order] + ([(p, limit) for p in order] if len(order) > 1 else [])
            per_pool: dict[str, int] = {}
            for pool, cap in passes:
                want = min(cap, limit - len(picked))
                if want <= 0:
                    continue
                taken = 0
                rows = conn.execute(q["jobs_due"], (pool, now, fns, want * 2 + per_pool.get(pool, 0))).fetchall()
                for run_id, cgroup, climit in rows:
                    if run_id in seen:
                        continue
                    if cgroup is not None:
                        n = running.get(cgroup)
                        if n is None:
                            conn.execute(q["cgroup_lock"], (cgroup,))
                            n = conn.execute(q["cgroup_running"], (cgroup, now)).fetchone()[0]
                        if n >= climit:
                            running[cgroup] = n
                            continue
                        running[cgroup] = n + 1
                    picked.append(run_id)
                    seen.add(run_id)
                    taken += 1
                    per_pool[pool] = per_pool.get(pool, 0) + 1
                    if taken >= want:
                        break
            if not picked:
                return claimed
            leased = self._lease_many(tx, picked, worker, now + lease)
            resumed = [row[0] for row in leased if row[2] is not None and not row[9]]
            memos = self._memos(tx, resumed) if resumed else {}
            for run_id, token, fid, pool, ev_id, ev_name, ev_data, ev_ts, failure_of, first, trace in leased:
                if fid is None:  # the run ended (cancelled) but its job stayed: drop the job
                    conn.execute(q["job_delete"], (run_id,))
                    continue
                memo = {} if first else self._resolve_waits(tx, run_id, memos.get(run_id, {}))
                claimed.append(ClaimedJob(run_id, token, fid, pool, ev_id, ev_name, ev_data, ev_ts, memo, failure_of,
                                          db_now=now, trace=trace, first=bool(first)))
        return claimed

    def _lease_many(self, tx: Tx, run_ids: list[str], worker: str, expires: float) -> list[tuple[Any, ...]]:
        """Lease these jobs and mark their runs running. Rows of ``(run_id, token, function_id, pool,
        event_id, event_name, event_data, event_ts, failure_of, first_claim, event_trace)``;
        ``function_id`` is None where the run had already ended."""
        conn, q, now = tx.conn, self.q, tx.now
        rows: list[tuple[Any, ...]] = []
        for run_id in run_ids:
            token = conn.execute(q["job_lease"], (expires, expires, worker, run_id)).fetchone()[0]
            row = conn.execute(q["run_mark_running"], (now, run_id, now)).fetchone()
            if row is None:
                rows.append((run_id, token, None, None, None, None, None, None, None, None, None))
                continue
            fid, pool, event_id, failure_of, first = row
            ev = conn.execute(q["event_for_run"], (event_id,)).fetchone()
            rows.append((run_id, token, fid, pool, ev[0], ev[1], ev[2], ev[3], failure_of, first, ev[4]))
        return rows

    def _memos(self, tx: Tx, run_ids: list[str]) -> dict[str, dict[str, MemoStep]]:
        """The memos of these runs (their saved steps)."""
        memos: dict[str, dict[str, MemoStep]] = {}
        for run_id in run_ids:
            memos[run_id] = {r[0]: _memo_step(r) for r in tx.conn.execute(self.q["memo_for_run"], (run_id,))}
        return memos

    def _resolve_waits(self, tx: Tx, run_id: str, memo: dict[str, MemoStep]) -> dict[str, MemoStep]:
        conn, q = tx.conn, self.q
        if any(m.kind == "wait_for_event" and m.status == "waiting" for m in memo.values()):
            for step_id, matched in conn.execute(q["waits_resolve"], (run_id, tx.now)).fetchall():
                output = "null"
                if matched is not None:
                    e = conn.execute(q["event_get"], (matched,)).fetchone()
                    output = f'{{"id":{_dumps(e[0])},"name":{_dumps(e[1])},"data":{e[2]},"ts":{_dumps(e[3])}}}'
                conn.execute(q["step_resolve"], ("completed", output, None, tx.now, run_id, step_id))
                m = memo[step_id]
                m.status, m.output, m.attempts = "completed", output, m.attempts + 1
        return memo

    def jobs_heartbeat(self, leases: Sequence[tuple[str, int]], lease: float) -> list[str]:
        lost = []
        with self._write(durable=False) as tx:
            expires = tx.now + lease
            for run_id, token in leases:
                if tx.conn.execute(self.q["job_heartbeat"], (expires, expires, run_id, token)).rowcount == 0:
                    lost.append(run_id)
        return lost

    def jobs_next_due(self, pools: Sequence[str], functions: Sequence[str]) -> float | None:
        fns = self._array(functions)
        with self._read() as conn:
            times = [conn.execute(self.q["next_due"], (p, fns)).fetchone()[0] for p in pools]
        due = [t for t in times if t is not None and t < FAR_FUTURE]
        return min(due) if due else None

    def jobs_commit(self, results: Sequence[JobResult]) -> list[bool]:
        """Apply a batch in one transaction. Every result is fenced by its lease token.

        Runs whose results are plain (step checkpoints, completion, suspension) are written
        with set-based statements; the rest (failures, side effects, releases) one by one,
        each in a savepoint so that one bad result cannot wedge the batch.
        """
        with self._write() as tx:
            tokens = self._fence_many(tx, list(dict.fromkeys(r.run_id for r in results)))
            accepted = [tokens.get(r.run_id) == r.token for r in results]
            plain_runs = {r.run_id for r in results}
            for res in results:
                if not _plain(res):
                    plain_runs.discard(res.run_id)
            plain = [r for r, ok in zip(results, accepted, strict=True) if ok and r.run_id in plain_runs]
            other = [r for r, ok in zip(results, accepted, strict=True) if ok and r.run_id not in plain_runs]
            ended: list[tuple[str, str, str, str | None, str | None]] = []
            if plain:
                ended = self._apply_plain(tx, plain)
            for res in other:
                self._apply_one(tx, res)
            if ended:
                # last: the parents' counter rows are the only rows other workers' commits contend
                # for, so their locks are taken just before COMMIT and held as briefly as possible
                self._children_ended(tx, ended)
        return accepted

    def _fence_many(self, tx: Tx, run_ids: list[str]) -> dict[str, int]:
        """The lease token of each of these jobs that is leased now (locking them)."""
        tokens = {}
        for run_id in run_ids:
            row = tx.conn.execute(self.q["job_fence"], (run_id,)).fetchone()
            if row is not None:
                tokens[run_id] = row[0]
        return tokens

    def _apply_plain(self, tx: Tx, results: list[JobResult]) -> list[tuple[str, str, str, str | None, str | None]]:
        """Write plain results; returns the children among them that ended, for the caller to count."""
        steps = [_step_row(r.run_id, w, tx.now) for r in results for w in r.steps]
        if steps:
            self._many(tx, "step_upsert", steps)
        logs = [(r.run_id, lg.step_id, lg.attempt, lg.ts, lg.level, lg.message) for r in results for lg in r.logs]
        if logs:
            self._many(tx, "log_insert", logs)
        ended: list[tuple[str, str, str, str | None, str | None]] = []
        done = [(r.run_id, r.outcome.output) for r in results if isinstance(r.outcome, Completed)]
        if done:
            outputs = dict(done)
            ended = [(parent_id, parent_step, "completed", outputs[run_id], None)
                     for run_id, parent_id, parent_step in self._complete_many(tx, done) if parent_id and parent_step]
        paused = [
            (r.run_id, FAR_FUTURE if r.outcome.run_at is None else r.outcome.run_at,
             "queued" if r.outcome.reason in ("yield", "retry") else "waiting")
            for r in results if isinstance(r.outcome, Suspended)
        ]
        if paused:
            self._suspend_many(tx, paused)
        return ended

    def _complete_many(self, tx: Tx, done: list[tuple[str, str]]) -> list[tuple[str, str | None, str | None]]:
        """Complete these runs and drop their jobs; ``(run_id, parent_id, parent_step)`` of those completed."""
        conn, q = tx.conn, self.q
        out = []
        for run_id, output in done:
            row = conn.execute(q["run_complete"], (output, tx.now, run_id)).fetchone()
            if row is not None:
                out.append((run_id, row[0], row[1]))
        self._many(tx, "job_delete", [(run_id,) for run_id, _ in done])
        return out

    def _suspend_many(self, tx: Tx, paused: list[tuple[str, float, str]]) -> None:
        self._many(tx, "job_reschedule", [(run_at, run_id) for run_id, run_at, _ in paused])
        self._many(tx, "run_set_status", [(status, run_id) for run_id, _, status in paused])

    def _apply_one(self, tx: Tx, res: JobResult) -> None:
        conn = tx.conn
        conn.execute("SAVEPOINT result")
        try:
            self._apply_result(tx, res)
        except self._bad_result_errors as exc:
            # One bad result must not wedge the batch: the run fails with the reason.
            conn.execute("ROLLBACK TO SAVEPOINT result")
            error = {"step_id": None, "type": type(exc).__name__, "message": str(exc)}
            self._apply_outcome(tx, JobResult(res.run_id, res.token, res.function_id, outcome=Failed(error)))
        conn.execute("RELEASE SAVEPOINT result")

    def _apply_result(self, tx: Tx, res: JobResult) -> None:
        conn, q = tx.conn, self.q
        for w in res.steps:
            self._write_step(tx, res.run_id, w)
        for lg in res.logs:
            conn.execute(q["log_insert"], (res.run_id, lg.step_id, lg.attempt, lg.ts, lg.level, lg.message))
        if res.outcome is not None:
            self._apply_outcome(tx, res)
        elif res.release:
            conn.execute(q["job_release"], (tx.now + max(0.0, res.delay), res.run_id))
            conn.execute(q["run_set_status"], ("queued", res.run_id))

    def _write_step(self, tx: Tx, run_id: str, w: StepWrite) -> None:
        conn, q = tx.conn, self.q
        conn.execute(q["step_upsert"], _step_row(run_id, w, tx.now))
        for ev in w.events:
            self._send(tx, ev)
        if w.children:
            self._create_children(tx, run_id, w.children)
        if w.kind == "map" and w.status == "waiting" and w.children_total is not None:
            # the total is known only now: children that ended meanwhile may already be all of them
            row = conn.execute(q["fanout_counts"], (run_id, w.id)).fetchone()
            if row is not None and self._maybe_resolve(tx, run_id, w.id, row[0], row[1], row[2], row[3], None):
                tx.woken.add(run_id)
        if w.wait is not None:
            wt = w.wait
            conn.execute(q["wait_insert"], (run_id, w.id, wt.event_name, wt.match_path, wt.match_value,
                                            tx.now, wt.expires_at))

    def _apply_outcome(self, tx: Tx, res: JobResult) -> None:
        conn, q, now, out = tx.conn, self.q, tx.now, res.outcome
        if isinstance(out, Completed):
            row = conn.execute(q["run_complete"], (out.output, now, res.run_id)).fetchone()
            conn.execute(q["job_delete"], (res.run_id,))
            if row and row[0]:
                self._notify_parent(tx, row[0], row[1], "completed", out.output, None)
        elif isinstance(out, Failed):
            error = _dumps(out.error)
            row = conn.execute(q["run_fail"], (error, now, res.run_id)).fetchone()
            conn.execute(q["job_delete"], (res.run_id,))
            if row is None:
                return
            parent_id, parent_step, failures, event_id, failure_of = row
            if parent_id:
                self._notify_parent(tx, parent_id, parent_step, "failed", None, error)
            handler = f"{res.function_id}/on-failure"
            if res.on_failure and failure_of is None and self._function(tx, handler) is not None:
                data = _dumps({"run_id": res.run_id, "function_id": res.function_id,
                               "event_id": event_id, "error": out.error})
                ev_id = f"{res.run_id}/failure/{failures}"
                conn.execute(q["event_insert"], (ev_id, "conveyor/run.failed", data, now, None))
                self._create_run(tx, new_id(), handler, ev_id, data, failure_of=res.run_id)
        elif isinstance(out, Suspended):
            woken = res.run_id in tx.woken  # what it waits for happened in this very transaction
            run_at = tx.now if woken else FAR_FUTURE if out.run_at is None else out.run_at
            conn.execute(q["job_reschedule"], (run_at, res.run_id))
            status = "queued" if woken or out.reason in ("yield", "retry") else "waiting"
            conn.execute(q["run_set_status"], (status, res.run_id))

    def _notify_parent(self, tx: Tx, parent_id: str, step_id: str, status: str,
                       output: str | None, error: str | None) -> None:
        """One child ended (see :meth:`_children_ended`)."""
        self._children_ended(tx, [(parent_id, step_id, status, output, error)])

    def _children_ended(self, tx: Tx, ended: Sequence[tuple[str, str, str, str | None, str | None]]) -> None:
        """Children ended: ``(parent_id, step_id, status, output, error)`` each.

        They are counted on their parents' steps with one increment per step per transaction
        (in a fixed order, so concurrent transactions take the rows' locks in the same order).
        The increment that reaches the total resolves the step and wakes the parent; since it
        runs in the children's own transaction under the row's lock, exactly one transaction
        does, whatever the races between the last children.
        """
        groups: dict[tuple[str, str], list[tuple[str, str | None, str | None]]] = {}
        for parent_id, step_id, status, output, error in ended:
            groups.setdefault((parent_id, step_id), []).append((status, output, error))
        for (parent_id, step_id), items in sorted(groups.items()):
            failed_now = sum(1 for s, _, _ in items if s != "completed")
            self._count_children(tx, parent_id, step_id, len(items), failed_now, items[-1])

    def _count_children(self, tx: Tx, parent_id: str, step_id: str, n: int, failed_now: int,
                        last: tuple[str, str | None, str | None]) -> None:
        conn, q = tx.conn, self.q
        row = conn.execute(q["child_ended"], (n, failed_now, parent_id, step_id)).fetchone()
        if row is None:
            return  # the step was resolved already (or the parent was cancelled)
        kind, total, ended, failed = row
        self._maybe_resolve(tx, parent_id, step_id, kind, total, ended, failed, last)

    def _maybe_resolve(self, tx: Tx, parent_id: str, step_id: str, kind: str, total: int | None, ended: int,
                       failed: int, last: tuple[str, str | None, str | None] | None) -> bool:
        """Resolve the step once every child ended (``total`` is unknown while a map still creates them)."""
        conn, q = tx.conn, self.q
        if total is None or ended < total:
            return False
        status, output, error = last or ("completed", None, None)
        if kind == "map":
            output, error, status = None, None, "completed"
            if failed:
                status = "failed"
                firsts = conn.execute(q["children_first_errors"], (parent_id, step_id, 3)).fetchall()
                details = "; ".join(
                    f"#{i} ({rid}): {json.loads(e).get('message', '') if e else 'cancelled'}" for i, rid, e in firsts
                )
                error = _dumps({"step_id": step_id, "type": "MapFailed",
                                "message": f"{failed} of {total} child runs failed; first errors: {details}"})
        conn.execute(q["step_resolve"], (status, output, error, tx.now, parent_id, step_id))
        conn.execute(q["parent_wake"], (parent_id,))
        conn.execute(q["job_wake"], (tx.now, parent_id, tx.now))
        return True

    def children_outputs(self, run_id: str, step_id: str, offset: int, limit: int) -> list[str | None]:
        rows = self._rows("children_outputs", (run_id, step_id, offset, limit))
        return [r[0] for r in rows]

    def child_error(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None:
        row = self._row("child_error_at", (run_id, step_id, index))
        if row is None or row[0] == "completed":
            return None
        return json.loads(row[1]) if row[1] else {"type": "RunCancelled", "message": "child run was cancelled"}

    def function_exists(self, function_id: str) -> bool:
        return self._row("function_exists", (function_id,)) is not None

    # ---- runs ---------------------------------------------------------------------------------

    def run_get(self, run_id: str) -> RunRow | None:
        row = self._row("run_get", (run_id,))
        return None if row is None else RunRow(*row)

    def runs_list(self, flt: RunFilter) -> list[RunRow]:
        query = self._runs_query(flt)
        return [] if query is None else [RunRow(*row) for row in self._listing(*query)]

    def _runs_query(self, flt: RunFilter) -> tuple[str, dict[str, Any]] | None:
        """The block that lists these runs on the index that fits, and its parameters; None when
        no run can match."""
        # a time window is a range of ids (they begin with their creation time)
        lo = "" if flt.since is None else id_floor(flt.since)
        hi = "~" if flt.until is None else id_floor(flt.until)
        p: dict[str, Any] = {"ev": flt.event_id, "par": flt.parent_id, "fn": flt.function, "st": flt.status,
                             "lo": lo, "hi": hi, "lim": flt.limit, "top": int(flt.top_level)}
        if flt.parent_id is not None:
            if flt.top_level:
                return None  # a parent's children are not top-level runs
            p["ps"], p["ci"] = "", -1  # children come in item order, after the cursor's position
            if flt.before is not None:
                at = self._row("run_position", (flt.before,))
                if at is None or at[0] is None:
                    return None
                p["ps"], p["ci"] = at
            block = "runs_by_parent_status" if flt.status is not None else "runs_by_parent"
        else:
            if flt.before is not None:
                p["hi"] = min(hi, flt.before)
            if flt.event_id is not None:
                block = "runs_by_event"
            elif flt.function is not None and flt.status == "failed":
                block = "runs_by_function_failed"  # its dead letters: a partial index of their own
            elif flt.function is not None:
                block = "runs_by_function"  # another status is a residual filter on the function's index
            elif flt.status is not None:
                block = "runs_by_status"
            else:
                block = "runs_top" if flt.top_level else "runs_all"
        return block, p

    def runs_of_events(self, event_ids: Sequence[str], limit_per_event: int) -> dict[str, list[RunRow]]:
        out: dict[str, list[RunRow]] = {event_id: [] for event_id in event_ids}
        if out:
            for row in self._rows("runs_of_events", (self._array(list(out)), limit_per_event)):
                out[row[2]].append(RunRow(*row))
        return out

    def steps_list(self, run_id: str) -> list[StepRow]:
        return [StepRow(*row) for row in self._rows("steps_list", (run_id,))]

    def children_counts(self, run_id: str) -> dict[str, int]:
        return dict(self._rows("children_counts", (run_id,)))

    def event_get(self, event_id: str) -> EventRow | None:
        row = self._row("event_get", (event_id,))
        return None if row is None else EventRow(*row)

    def logs_list(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        keys = ("step_id", "attempt", "ts", "level", "message")
        return [dict(zip(keys, r, strict=True)) for r in self._rows("logs_list", (run_id, limit))]

    def run_cancel(self, run_id: str) -> bool:
        with self._write() as tx:
            return self._cancel(tx, run_id)

    def _cancel(self, tx: Tx, run_id: str) -> bool:
        conn, q = tx.conn, self.q
        if conn.execute(q["run_cancel"], (tx.now, run_id)).rowcount == 0:
            return False
        conn.execute(q["job_delete"], (run_id,))
        conn.execute(q["waits_delete"], (run_id,))
        for (child,) in conn.execute(q["children_unfinished"], (run_id,)).fetchall():
            self._cancel(tx, child)
        row = conn.execute(q["run_parent"], (run_id,)).fetchone()
        if row and row[0]:
            error = _dumps({"step_id": row[1], "type": "RunCancelled", "message": f"run {run_id} was cancelled"})
            self._notify_parent(tx, row[0], row[1], "failed", None, error)
        return True

    def runs_prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        with self._write() as tx:
            picked: list[tuple[str, str]] = []
            for status in statuses:
                picked += tx.conn.execute(self.q["prune_pick"], (status, before, limit - len(picked))).fetchall()
                if len(picked) >= limit:
                    break
            self._delete_trees(tx, picked)
            return len(picked)

    def runs_delete(self, run_ids: Sequence[str]) -> int:
        with self._write() as tx:
            rows = [r for r in (tx.conn.execute(self.q["run_get"], (i,)).fetchone() for i in run_ids) if r]
            self._delete_trees(tx, [(r[0], r[2]) for r in rows])
            return len(rows)

    def _delete_trees(self, tx: Tx, roots: list[tuple[str, str]]) -> None:
        q, conn = self.q, tx.conn
        runs, events = [r for r, _ in roots], [e for _, e in roots]
        frontier = runs
        while frontier:
            children = conn.execute(q["children_of"], (self._array(frontier),)).fetchall()
            frontier = [c for c, _ in children]
            runs += frontier
            events += [e for _, e in children]
        if not runs:
            return
        ids = self._array(runs)
        for name in ("steps_delete_for", "logs_delete_for", "waits_delete_for", "jobs_delete_for",
                     "runs_delete_for"):
            conn.execute(q[name], (ids,))
        conn.execute(q["events_delete_unused"], (self._array(events),))

    def fanouts_reconcile(self, waited_since: float, limit: int) -> int:
        q = self.q
        stale = self._rows("fanouts_stale", (waited_since, limit))
        resolved = 0
        for run_id, step_id in stale:
            with self._write() as tx:
                row = tx.conn.execute(q["fanout_lock"], (run_id, step_id)).fetchone()
                if row is None or row[1] is None:
                    continue
                counts = dict(tx.conn.execute(q["children_step_counts"], (run_id, step_id)).fetchall())
                failed = counts.get("failed", 0) + counts.get("cancelled", 0)
                ended = counts.get("completed", 0) + failed
                tx.conn.execute(q["fanout_set_counts"], (ended, failed, run_id, step_id))
                last = None
                if row[0] == "invoke" and ended:
                    child = tx.conn.execute(q["children_outputs"], (run_id, step_id, 0, 1)).fetchone()
                    error = _dumps({"step_id": step_id, "type": "RunFailed", "message": "the child run failed"})
                    last = ("failed", None, error) if failed else ("completed", child[0] if child else None, None)
                if self._maybe_resolve(tx, run_id, step_id, row[0], row[1], ended, failed, last):
                    resolved += 1
        return resolved

    def schedule_advance(
        self, function_id: str, cron: str, timezone: str, now: float,
        plan: Callable[[float, float], tuple[float | None, int, float]],
    ) -> float | None:
        q = self.q
        with self._write() as tx:
            conn = tx.conn
            conn.execute(q["schedule_init"], (function_id, cron, timezone, now, tx.now))
            last_slot = conn.execute(q["schedule_lock"], (function_id,)).fetchone()[0]
            fire, missed, new_last = plan(last_slot, now)
            if fire is not None:
                scheduled = datetime.fromtimestamp(fire, timezone_utc).isoformat()
                data = _dumps({"function_id": function_id, "scheduled_at": scheduled})
                event_id = f"cron/{function_id}/{int(fire)}"
                if conn.execute(q["event_insert"], (event_id, "conveyor/cron", data, tx.now, None)).rowcount:
                    self._create_run(tx, new_id(), function_id, event_id, data)
            conn.execute(q["schedule_update"], (new_last, missed, cron, timezone, tx.now, function_id))
            return fire

    def schedules_list(self) -> list[tuple[str, str, str, float | None, int]]:
        return [tuple(r) for r in self._rows("schedules_list", ())]

    def events_prune(self, before: float, limit: int) -> int:
        with self._write() as tx:
            return int(tx.conn.execute(self.q["events_prune_unrouted"], (before, limit)).rowcount)

    def run_requeue(self, run_id: str, from_statuses: Sequence[str]) -> bool:
        q = self.q
        with self._write() as tx:
            row = tx.conn.execute(q["run_requeue"], (run_id, self._array(from_statuses))).fetchone()
            if row is None:
                return False
            pool, fid = row
            tx.conn.execute(q["steps_unfinished_delete"], (run_id,))
            ev = tx.conn.execute(q["run_event_data"], (run_id,)).fetchone()
            self._enqueue(tx, run_id, fid, pool, ev[0] if ev else "{}", tx.now)
            return True

    # ---- listing ------------------------------------------------------------------------------

    def functions_list(self) -> list[FunctionRow]:
        triggers: dict[str, list[str]] = {}
        for event_name, fid in self._rows("triggers_all", ()):
            triggers.setdefault(fid, []).append(event_name)
        return [
            FunctionRow(FunctionSpec(
                id=fid, pool=pool, triggers=tuple(triggers.get(fid, ())), retries=retries,
                concurrency_limit=limit, concurrency_key=key, cron=cron, has_on_failure=bool(on_failure),
            ), updated_at)
            for fid, pool, retries, limit, key, cron, on_failure, updated_at in self._rows("functions_all", ())
        ]

    def events_list(self, name: str | None, before: EventCursor | None, limit: int, *,
                    internal: bool = True) -> list[EventRow]:
        params = {"name": name, "ts": before.ts if before else None, "id": before.id if before else None,
                  "limit": limit}
        if name is None:
            block = "events_recent" if internal else "events_sent"
        elif name.startswith(INTERNAL_PREFIX):
            block = "events_recent"  # one of Conveyor's own names: asked for by name, so listed
        else:
            block = "events_named"  # an application's event name: its own index
        return [EventRow(*r) for r in self._listing(block, params)]

    def pools_backlog(self, now: float) -> list[PoolBacklog]:
        return [PoolBacklog(pool, int(n), oldest) for pool, n, oldest in self._rows("pools_backlog", (now,))]

    def functions_stats(self, since: float) -> dict[str, FunctionStats]:
        # two index range scans: every run of each function in the window, and the failed ones
        floor = id_floor(since)
        failed = {fid: int(n) for fid, n in self._rows("functions_failed_since", (floor,))}
        runs = self._rows("functions_runs_since", (floor,))
        return {fid: FunctionStats(int(n), failed.get(fid, 0)) for fid, n in runs}

    def ping(self) -> None:
        self._row("ping", ())

    def runs_count(self, status: str) -> int:
        return int(self._row("runs_count", (status,))[0])

    # ---- live processes -----------------------------------------------------------------------

    WORKER_FORGET_AFTER = 3600.0  # a worker silent this long is dropped from the registry

    def worker_beat(self, worker: WorkerRow) -> None:
        w = worker
        with self._write(durable=False) as tx:
            tx.conn.execute(self.q["worker_upsert"], (
                w.id, w.kind, w.host, w.pid, _dumps(list(w.pools)), w.concurrency, w.started_at, tx.now))
            tx.conn.execute(self.q["workers_forget"], (tx.now - self.WORKER_FORGET_AFTER,))

    def workers_list(self, seen_since: float) -> list[WorkerRow]:
        return [
            WorkerRow(wid, kind, host, int(pid), tuple(json.loads(pools)), int(conc), started, seen)
            for wid, kind, host, pid, pools, conc, started, seen in self._rows("workers_list", (seen_since,))
        ]

    def worker_remove(self, worker_id: str) -> None:
        with self._write(durable=False) as tx:
            tx.conn.execute(self.q["worker_delete"], (worker_id,))

    # ---- push endpoints -----------------------------------------------------------------------

    def endpoint_register(self, endpoint: Endpoint) -> None:
        e = endpoint
        with self._write() as tx:
            tx.conn.execute(self.q["endpoint_upsert"], (
                e.url, e.pool, _dumps(list(e.functions)), e.concurrency, e.rate, e.timeout, tx.now, tx.now,
            ))

    def endpoints_list(self) -> list[Endpoint]:
        return [
            Endpoint(url, pool, tuple(json.loads(functions)), concurrency, rate, timeout, registered, seen)
            for url, pool, functions, concurrency, rate, timeout, registered, seen in self._rows("endpoints_all", ())
        ]

    def endpoint_remove(self, url: str) -> bool:
        with self._write() as tx:
            return bool(tx.conn.execute(self.q["endpoint_delete"], (url,)).rowcount)
