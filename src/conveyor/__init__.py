"""Conveyor: durable background functions, dead letters and microprocesses for Python.

    from conveyor import Conveyor, Context

    app = Conveyor("media")

    @app.function(on="transcription.requested", retries=3)
    def transcribe_audio(ctx: Context) -> dict:
        meta = ctx.step.run("fetch-audio-metadata", fetch_metadata, ctx.event.data["audio_id"])
        ...
"""

from conveyor.errors import (
    ConfigError,
    ConveyorError,
    DatabaseUnavailable,
    InvalidInput,
    InvalidState,
    NonDeterminismError,
    NonRetriableError,
    NotFound,
    RetryAfterError,
    RunFailed,
    RunTimeout,
    SerializationError,
    ServerUnavailable,
    StepError,
)
from conveyor.executor.context import Context
from conveyor.scheduler.ticker import Schedule
from conveyor.sdk.app import Conveyor
from conveyor.sdk.function import Function, RunHandle
from conveyor.sdk.loader import load_app
from conveyor.types import (
    Backoff,
    Concurrency,
    Event,
    Progress,
    Run,
    RunStatus,
    StepRecord,
)
from conveyor.worker.service import Worker

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Concurrency",
    "ConfigError",
    "Context",
    "Conveyor",
    "ConveyorError",
    "DatabaseUnavailable",
    "Event",
    "Function",
    "InvalidInput",
    "InvalidState",
    "NonDeterminismError",
    "NonRetriableError",
    "NotFound",
    "Progress",
    "RetryAfterError",
    "Run",
    "RunFailed",
    "RunHandle",
    "RunStatus",
    "RunTimeout",
    "Schedule",
    "SerializationError",
    "ServerUnavailable",
    "StepError",
    "StepRecord",
    "Worker",
    "__version__",
    "load_app",
]
