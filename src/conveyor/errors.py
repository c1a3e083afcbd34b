"""Errors.

Two families, kept apart on purpose:

* User-facing errors derive from :class:`ConveyorError`. Each has a stable
  ``code`` that the HTTP layer maps to a status. ::

      ConveyorError
      ├── ConfigError            bad URL, bad option, missing extra
      ├── InvalidInput           payload not JSON, bad name, malformed cron
      │   └── SerializationError a value that is not JSON-serializable
      ├── NotFound               unknown run, event or function
      ├── InvalidState           cancel a finished run, redrive a live one
      ├── DatabaseUnavailable    the database did not answer in time
      │   └── ServerUnavailable  an HTTP producer's server did not accept a call in time
      ├── NonDeterminismError    a replay diverged from the memo
      ├── RunFailed              a run the caller waited on failed or was cancelled
      └── RunTimeout             a run did not end within the caller's timeout

* Errors that user code raises to steer retries: :class:`NonRetriableError`,
  :class:`RetryAfterError`; and :class:`StepError`, which Conveyor raises *into*
  user code when a step failed for good.

Internal control flow (suspending an invocation, a lost lease) uses
``BaseException`` subclasses in :mod:`conveyor.executor.ops`, so that a user's
``except Exception`` can never swallow them.
"""

from __future__ import annotations

from datetime import timedelta


class ConveyorError(Exception):
    """Root of every error Conveyor raises for the caller's mistakes or states."""

    code = "conveyor_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ConveyorError):
    code = "config_error"


class InvalidInput(ConveyorError):
    code = "invalid_input"


class SerializationError(InvalidInput):
    code = "not_serializable"


class DatabaseUnavailable(ConveyorError):
    """The database did not answer (down, unreachable, or out of connections)."""

    code = "database_unavailable"


class ServerUnavailable(DatabaseUnavailable):
    """An app that sends over HTTP could not reach the Conveyor server (or it stayed
    overloaded) within its ``send_timeout``. A ``DatabaseUnavailable``: the server is
    where this app's events are stored."""

    code = "server_unavailable"


class NotFound(ConveyorError):
    code = "not_found"


class InvalidState(ConveyorError):
    code = "invalid_state"


class NonDeterminismError(ConveyorError):
    """A replay did not follow the memo: code between steps is not deterministic."""

    code = "non_determinism"


class RunFailed(ConveyorError):
    """The run failed (or was cancelled); ``str()`` carries the original message."""

    code = "run_failed"

    def __init__(
        self,
        message: str,
        *,
        run_id: str = "",
        error_type: str = "",
        step_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error_type = error_type
        self.step_id = step_id


class RunTimeout(ConveyorError, TimeoutError):
    code = "timeout"


class NonRetriableError(Exception):
    """Raise from a step to fail it now, without further attempts."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class RetryAfterError(Exception):
    """Raise from a step to retry it after ``after`` (seconds or a timedelta).

    It counts as a failed attempt: with ``retries=N`` a step runs at most N+1 times.
    """

    def __init__(self, message: str = "", after: float | timedelta = 1.0) -> None:
        super().__init__(message)
        self.message = message
        seconds = after.total_seconds() if isinstance(after, timedelta) else float(after)
        if seconds < 0:
            raise ValueError("RetryAfterError: 'after' must not be negative")
        self.after = seconds


class StepError(Exception):
    """A step failed for good. Raised into the function; it may catch it and go on."""

    def __init__(self, step_id: str | None, error_type: str, message: str) -> None:
        where = f"step {step_id!r}" if step_id else "function"
        super().__init__(f"{where} failed: {error_type}: {message}")
        self.step_id = step_id
        self.error_type = error_type
        self.message = message

    def to_dict(self) -> dict[str, str | None]:
        return {"step_id": self.step_id, "type": self.error_type, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> StepError:
        step = data.get("step_id")
        return cls(
            step if isinstance(step, str) else None,
            str(data.get("type", "Error")),
            str(data.get("message", "")),
        )
