"""A fixed set of daemon threads that run submitted calls.

Unlike ``concurrent.futures.ThreadPoolExecutor``, whose threads the interpreter joins
at exit, these never hold up a process that is stopping: a step still running past
the grace period is abandoned (its job was released, and its late writes are fenced).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class DaemonPool:
    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # keep the thread alive whatever the call did
                log.exception("uncaught error in %s", threading.current_thread().name)
