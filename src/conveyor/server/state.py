"""What the routes share: the engine, the settings, the intake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from conveyor.engine.engine import Engine
from conveyor.server.config import ServerConfig
from conveyor.server.intake import Intake


@dataclass
class State:
    engine: Engine
    config: ServerConfig
    intake: Intake
    background: set[Any] = field(default_factory=set)  # tasks kept alive until they end


def state(request: Request) -> State:
    st: State = request.app.state.conveyor
    return st
