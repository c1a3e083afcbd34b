"""LISTEN/NOTIFY: wake idle workers on any host when new work is stored."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from typing import Any

log = logging.getLogger(__name__)
CHANNEL = "conveyor_jobs"


class PGListener:
    """A dedicated connection that LISTENs; ``wait`` returns when notified, poked, or timed out.

    If the connection drops (PostgreSQL restarted), ``wait`` reconnects on its next call
    and reports a wake-up, so the worker polls the database meanwhile (polling is the
    fallback; a lost notification only delays a job until the next poll).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._connect()

    def _connect(self) -> None:
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            log.debug("LISTEN connection failed: %s", exc)
            self._conn = None
            return
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            self._connect()
            conn = self._conn
            if conn is None:
                select.select([self._r], [], [], min(max(0.0, timeout), 1.0))
                self._drain_pokes()
                return True
        try:
            ready, _, _ = select.select([self._r, conn.fileno()], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            self._drop()
            return True
        if not ready:
            return False
        self._drain_pokes()
        if conn.fileno() in ready:
            try:
                for _ in conn.notifies(timeout=0):
                    pass
            except Exception:  # the connection broke: reconnect next time, poll now
                self._drop()
        return True

    def _drain_pokes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(256):
                pass

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            self._w.send(b"!")

    def close(self) -> None:
        self._drop()
        self._r.close()
        self._w.close()
