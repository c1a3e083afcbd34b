"""``InvocationInput``: what one invocation needs besides the code.

The database's side computes it (``conveyor.engine.prepare.invocation_input``); the
side that holds the code turns it into an :class:`~conveyor.executor.invocation.Invocation`.
With push delivery the two are different machines and this travels as JSON
(``conveyor.push.protocol``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.records import MemoStep
from conveyor.types import Event


@dataclass(slots=True)
class InvocationInput:
    """Enough to run one invocation of ``function_id`` for ``run_id``."""

    run_id: str
    function_id: str
    event: Event
    memo: dict[str, MemoStep] = field(default_factory=dict)
    failure: dict[str, Any] | None = None  # an on_failure handler's: the error of the failed run
    skew: float = 0.0  # the database clock minus the local one
    trace: str | None = None  # the W3C traceparent of the run's event: its spans join that trace
