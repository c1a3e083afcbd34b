"""Group commit: many finishing invocations share one transaction.

Invocation threads hand their results to one committer thread. It takes every
result waiting at that moment and applies them together (each one still fenced
and atomic on its own), so a burst of N short runs costs a few commits, not N.
A result is acknowledged to nobody before its transaction commits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from conveyor.storage.base import JobResult

log = logging.getLogger(__name__)
_STOP = object()


class Committer:
    def __init__(
        self,
        commit: Callable[[Sequence[JobResult]], list[bool]],
        on_done: Callable[[Sequence[JobResult], list[bool]], None],
        *,
        max_batch: int = 512,
    ) -> None:
        self._commit = commit
        self._on_done = on_done
        self._max = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="conveyor-committer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, result: JobResult) -> None:
        self._queue.put(result)

    def stop(self, timeout: float | None = None) -> None:
        """Commit everything submitted so far, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[JobResult] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self._max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._flush(batch)

    def _flush(self, batch: list[JobResult]) -> None:
        delay = 0.05
        while True:
            try:
                accepted = self._commit(batch)
                break
            except Exception:  # the database is unreachable or locked: keep the results, retry
                log.exception("commit of %d results failed; retrying in %.2fs", len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            self._on_done(batch, accepted)
        except Exception:
            log.exception("post-commit bookkeeping failed")
