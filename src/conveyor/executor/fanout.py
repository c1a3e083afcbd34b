"""``ctx.step.map``: fan out one child run per item (see issue on microprocesses)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.executor.ops import FatalRunError

if TYPE_CHECKING:
    from conveyor.executor.invocation import Invocation


def map_step(inv: Invocation, id: str, function: Any, items: Iterable[Any]) -> Any:
    raise FatalRunError({
        "step_id": id, "type": "NotImplementedError",
        "message": "ctx.step.map is not available in this version",
    })
