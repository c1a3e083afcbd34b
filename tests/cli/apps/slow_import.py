"""An app whose import announces itself, then waits to be released: the CLI test sends SIGTERM
while the worker is still loading it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import conveyor

Path(os.environ["SLOW_IMPORT_STARTED"]).touch()
release = Path(os.environ["SLOW_IMPORT_RELEASE"])
deadline = time.monotonic() + 60
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.01)

app = conveyor.Conveyor("slow-import")


@app.function(on="slow.go")
def noop(ctx: conveyor.Context) -> None:
    return None
