"""A process's entry in the workers' registry, which the dashboard and ``conveyor_workers``
read: announced when it starts serving, beaten every ``interval`` seconds while it does, and
removed when it stops. A process that dies simply stops beating and drops out of the list."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from conveyor.engine.engine import WORKER_BEAT, Engine
from conveyor.storage.base import WorkerRow

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, engine: Engine, worker_id: str, row: Callable[[], WorkerRow]) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.row = row  # this process as the registry should see it now
        self.interval = WORKER_BEAT
        self._next = 0.0

    def announce(self) -> None:
        """Write the entry now (raises if the database is away)."""
        self.engine.worker_alive(self.row())
        self._next = time.monotonic() + self.interval

    def beat_if_due(self) -> None:
        """Write the entry if ``interval`` has passed; a failure waits for the next beat."""
        if time.monotonic() < self._next:
            return
        try:
            self.announce()
        except Exception:
            self._next = time.monotonic() + self.interval
            log.debug("%s: registry beat failed", self.worker_id, exc_info=True)

    def leave(self) -> None:
        """Remove the entry; if the database is away, it drops out once it stops beating."""
        try:
            self.engine.worker_gone(self.worker_id)
        except Exception:
            log.debug("could not deregister %s", self.worker_id, exc_info=True)
