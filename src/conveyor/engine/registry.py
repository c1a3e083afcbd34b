"""The functions an engine can execute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.storage.base import FunctionSpec
from conveyor.types import Backoff


@dataclass(slots=True)
class FunctionDef:
    id: str
    fn: Callable[..., Any]
    spec: FunctionSpec
    backoff: Backoff | None = None
    failure_handler_of: str | None = None  # set on the hidden function that runs an on_failure handler
    timezone: str | None = None  # of the cron schedule (None: UTC)


class Registry:
    def __init__(self) -> None:
        self.functions: dict[str, FunctionDef] = {}
        self.version = 0
        self._known: tuple[int, frozenset[str]] | None = None

    def add(self, definition: FunctionDef) -> None:
        self.functions[definition.id] = definition
        self.version += 1

    def get(self, function_id: str) -> FunctionDef | None:
        return self.functions.get(function_id)

    def pools(self) -> list[str]:
        return sorted({d.spec.pool for d in self.functions.values()})

    def ids(self) -> list[str]:
        return sorted(self.functions)

    def known(self) -> frozenset[str]:
        cached = self._known
        if cached is None or cached[0] != self.version:
            cached = self._known = (self.version, frozenset(self.functions))
        return cached[1]

    def specs(self) -> list[FunctionSpec]:
        return [d.spec for d in self.functions.values()]
