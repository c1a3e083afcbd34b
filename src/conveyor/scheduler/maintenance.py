"""Housekeeping that some process must run: backend maintenance, retention, the fan-in
reconciler. Every worker runs it, and so does the server (which may have no workers)."""

from __future__ import annotations

import logging
import threading
import time

from conveyor.engine.engine import Engine

log = logging.getLogger("conveyor.maintenance")


def run_maintenance(engine: Engine, stop: threading.Event, housekeeping: float = 15.0, full: float = 300.0) -> None:
    """Until ``stop``: every ``housekeeping`` seconds the backend's housekeeping (statistics, log
    size); every ``full`` seconds retention (prune ended runs) and the fan-in reconciler."""
    next_full = time.monotonic() + min(10.0, full)
    while not stop.wait(housekeeping):
        try:
            engine.storage.maintain()
        except Exception:
            log.debug("storage housekeeping failed; will try again", exc_info=True)
        if time.monotonic() < next_full:
            continue
        next_full = time.monotonic() + full
        try:
            pruned = engine.prune()
            if pruned:
                log.info("pruned %d ended runs older than the retention", pruned)
        except Exception:
            log.warning("pruning old runs failed; will try again later", exc_info=True)
        try:
            repaired = engine.reconcile()
            if repaired:
                log.warning("reconciler resumed %d parents whose children had all ended", repaired)
        except Exception:
            log.warning("reconciling fan-outs failed; will try again later", exc_info=True)
