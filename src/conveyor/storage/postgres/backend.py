"""PostgreSQL backend: many workers on many hosts.

Jobs are claimed in batches with ``FOR UPDATE SKIP LOCKED``; idle workers wake on
``LISTEN/NOTIFY`` (polling is the fallback); leases, timers and schedules run on the
database clock. Connections come from a psycopg pool; a connection broken by a
restart is discarded and the caller's operation is retried by the worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from conveyor.errors import ConfigError, DatabaseUnavailable
from conveyor.records import MemoStep, NewEvent
from conveyor.storage.base import Listener
from conveyor.storage.postgres.notify import CHANNEL, PGListener
from conveyor.storage.relational import RelationalStorage, Tx, _memo_step
from conveyor.storage.sql import load_queries

PACKAGE = "conveyor.storage.postgres"
_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
# Lease bookkeeping (claims, heartbeats) needs no flush at commit: a claim lost in a crash
# only makes its job claimable again, and lease tokens never repeat. Sorting is switched off
# so the claim walks the (pool, run_at) index even before the planner has statistics (a
# fresh table would otherwise be read whole and sorted at every claim).
_NOW_LIGHT = (
    "SELECT extract(epoch FROM clock_timestamp())::float8,"
    " set_config('synchronous_commit', 'off', true), set_config('enable_sort', 'off', true)"
)

try:
    import psycopg
    import psycopg_pool
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]
    psycopg_pool = None  # type: ignore[assignment]


class PostgresStorage(RelationalStorage):
    migrations_package = PACKAGE
    parallel_writes = 2  # commits overlap their round trips; more only queue on the same rows

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 12, timeout: float = 10.0) -> None:
        if psycopg is None or psycopg_pool is None:
            raise ConfigError(
                "the PostgreSQL backend needs psycopg 3 and psycopg-pool: pip install 'conveyor[postgres]'"
            )
        self.url = url
        self.integrity_errors = (psycopg.errors.IntegrityError,)
        self.q = load_queries(PACKAGE)
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            kwargs={"autocommit": True, "connect_timeout": 5}, name="conveyor",
        )
        try:
            self._pool.open(wait=False)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to PostgreSQL: {exc}") from None

    # ---- connections and transactions ---------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection, or :class:`DatabaseUnavailable` once the pool's timeout passes."""
        try:
            cm = self._pool.connection()
            conn = cm.__enter__()
        except psycopg_pool.PoolTimeout:
            raise DatabaseUnavailable(
                f"PostgreSQL did not answer within {self._pool.timeout:g}s ({_safe(self.url)})"
            ) from None
        try:
            yield conn
        except BaseException as exc:
            if not cm.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            cm.__exit__(None, None, None)

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Tx]:
        with self._connection() as conn, conn.transaction():
            now = conn.execute(_NOW if durable else _NOW_LIGHT).fetchone()[0]
            yield Tx(conn, now)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._connection() as conn:
            yield conn

    def _array(self, values: Sequence[str]) -> list[str]:
        return list(values)

    def _listing(self, name: str, params: Mapping[str, Any]) -> list[Any]:
        """Never a prepared statement: its generic plan cannot see the filters and the id range
        of the time window, and takes the primary key backwards for a LIMIT, filtering a
        million rows to find none (0.2 s); planned for the values, each page takes an index
        that fits (under a millisecond)."""
        with self._read() as conn:
            return list(conn.execute(self.q[name], params, prepare=False).fetchall())

    # ---- set-based batch verbs (one round trip for a batch) -----------------------------------

    def _many(self, tx: Tx, name: str, rows: Sequence[Sequence[Any]]) -> None:
        """Many rows in one statement over arrays where the query has a bulk twin."""
        bulk = self.q.get(f"{name}_unnest")
        if bulk is None or len(rows) < 2:
            super()._many(tx, name, rows)
            return
        tx.conn.execute(bulk, [list(column) for column in zip(*rows, strict=True)])

    def _insert_events(self, tx: Tx, events: Sequence[NewEvent]) -> set[str]:
        cols: tuple[list[Any], ...] = ([], [], [], [], [])
        for ev in events:
            cols[0].append(ev.id)
            cols[1].append(ev.name)
            cols[2].append(ev.data)
            cols[3].append(ev.ts)
            cols[4].append(ev.trace)
        return {r[0] for r in tx.conn.execute(self.q["events_insert_many"], cols).fetchall()}

    def _lease_many(self, tx: Tx, run_ids: list[str], worker: str, expires: float) -> list[tuple[Any, ...]]:
        params = (expires, expires, worker, run_ids, tx.now, tx.now)
        return list(tx.conn.execute(self.q["jobs_lease_many"], params).fetchall())

    def _fence_many(self, tx: Tx, run_ids: list[str]) -> dict[str, int]:
        return dict(tx.conn.execute(self.q["jobs_fence_many"], (run_ids,)).fetchall())

    def _complete_many(self, tx: Tx, done: list[tuple[str, str]]) -> list[tuple[str, str | None, str | None]]:
        ids = [run_id for run_id, _ in done]
        rows = tx.conn.execute(self.q["runs_complete_many"], (tx.now, ids, [o for _, o in done])).fetchall()
        tx.conn.execute(self.q["jobs_delete_many"], (ids,))
        return [tuple(r) for r in rows]

    def _suspend_many(self, tx: Tx, paused: list[tuple[str, float, str]]) -> None:
        ids = [p[0] for p in paused]
        tx.conn.execute(self.q["jobs_reschedule_many"], (ids, [p[1] for p in paused]))
        tx.conn.execute(self.q["runs_status_many"], (ids, [p[2] for p in paused]))

    def _memos(self, tx: Tx, run_ids: list[str]) -> dict[str, dict[str, MemoStep]]:
        memos: dict[str, dict[str, MemoStep]] = {}
        for row in tx.conn.execute(self.q["memos_for_runs"], (run_ids,)):
            memos.setdefault(row[0], {})[row[1]] = _memo_step(row[1:])
        return memos

    def close(self) -> None:
        self._pool.close()

    def now(self) -> float:
        with self._connection() as conn:
            value: float = conn.execute(_NOW).fetchone()[0]
            return value

    def maintain(self) -> None:
        """Keep the queue tables' statistics fresh and their dead rows reclaimed, whether or not
        the server's autovacuum is on: one worker at a time (an advisory lock), never blocking.

        Fresh statistics also replace the cached plans of prepared statements: a queue's tables go
        from empty to millions of rows in minutes, and a plan made while they were empty (a scan)
        must not outlive that."""
        with self._connection() as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(4242002)").fetchone()[0]:
                return
            try:
                conn.execute("VACUUM (ANALYZE) conveyor_jobs")
                conn.execute("ANALYZE conveyor_runs, conveyor_steps, conveyor_events")
            finally:
                conn.execute("SELECT pg_advisory_unlock(4242002)")

    def listener(self) -> Listener:
        return PGListener(self.url)

    def notify(self) -> None:
        with self._connection() as conn:
            conn.execute(f"NOTIFY {CHANNEL}")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"
