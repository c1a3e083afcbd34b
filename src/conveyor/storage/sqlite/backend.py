"""SQLite backend: WAL, synchronous=FULL, one writer at a time, many processes per host."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from conveyor.errors import ConfigError, DatabaseUnavailable
from conveyor.storage.base import Listener
from conveyor.storage.relational import RelationalStorage, Tx
from conveyor.storage.sql import load_queries
from conveyor.storage.sqlite.notify import Listener as WakeListener
from conveyor.storage.sqlite.notify import Notifier

PACKAGE = "conveyor.storage.sqlite"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class SQLiteStorage(RelationalStorage):
    """SQLite: WAL, synchronous=FULL for everything acknowledged, one writer at a time."""

    migrations_package = PACKAGE
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str, *, busy_timeout: float = 60.0) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        self._resources: list[sqlite3.Connection | Notifier] = []
        self._notifier: Notifier | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._resources)
        self.q = load_queries(PACKAGE)
        parent = Path(path).parent
        if not parent.is_dir():
            raise ConfigError(f"the directory of the SQLite database does not exist: {parent}")

    # ---- connections and transactions ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=self._busy_ms / 1000)
            except sqlite3.OperationalError as exc:
                raise ConfigError(f"cannot open SQLite database {self.path!r}: {exc}") from None
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            _enable_wal(conn, self._busy_ms / 1000)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -32000")
            self._local.conn = conn
            with self._lock:
                self._resources.append(conn)
        return conn

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Tx]:
        """A write transaction. ``durable=False`` skips the fsync at commit: only for lease
        bookkeeping (claims, heartbeats), whose loss in a power failure just makes a job
        claimable again. Everything acknowledged to anyone commits with synchronous=FULL."""
        conn = self._conn()
        if not durable:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            self._begin(conn)
            try:
                yield Tx(conn, time.time())
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, retrying every few hundred microseconds while another writer holds it.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ms… between tries, which puts
        milliseconds on an event's acknowledgement whenever a worker is committing.
        """
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self._busy_ms / 1000
            delay = 0.0001
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 1.5, 0.002)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def close(self) -> None:
        with self._lock:
            _close_all(self._resources)
            self._notifier = None
        self._local = threading.local()

    def ping(self) -> None:
        # an open connection still reads a file that was deleted under it: look for the file too
        if self.path != ":memory:" and not os.path.exists(self.path):
            raise DatabaseUnavailable(f"the SQLite file {self.path} is gone")
        super().ping()

    def now(self) -> float:
        return time.time()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        yield self._conn()

    def _array(self, values: Sequence[str]) -> str:
        return _dumps(list(values))

    def maintain(self) -> None:
        """Reset the write-ahead log: with writers that never pause, SQLite's automatic
        checkpoints can copy pages back but never restart the log, which then grows without bound."""
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def listener(self) -> Listener:
        return WakeListener(self.path)

    def notify(self) -> None:
        notifier = self._notifier
        if notifier is None:
            with self._lock:
                if self._notifier is None:
                    self._notifier = Notifier(self.path)
                    self._resources.append(self._notifier)
                notifier = self._notifier
        notifier.notify()


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL. The busy handler does not cover this pragma when several processes
    open a new file at once, so retry it for a bounded time."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        if mode.lower() != "wal":
            raise ConfigError(f"cannot put the SQLite database in WAL mode (it is in {mode!r} mode)")
        return


def _close_all(resources: list[sqlite3.Connection | Notifier]) -> None:
    while resources:
        with suppress(Exception):
            resources.pop().close()

