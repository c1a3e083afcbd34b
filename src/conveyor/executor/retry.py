"""When a failed attempt is retried, and after how long."""

from __future__ import annotations

import random

from conveyor.errors import NonRetriableError, RetryAfterError
from conveyor.types import Backoff


def retry_delay(
    error: BaseException,
    failed_attempts: int,
    retries: int,
    backoff: Backoff,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` if the step failed for good.

    ``failed_attempts`` counts the attempts that failed so far, this one included.
    """
    if isinstance(error, NonRetriableError) or failed_attempts > retries:
        return None
    if isinstance(error, RetryAfterError):
        return error.after
    exp = min(backoff.cap, backoff.base * backoff.factor ** (failed_attempts - 1))
    r = (rand or random).random()
    return exp * (1.0 - backoff.jitter * r)
