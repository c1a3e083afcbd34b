"""Load ``MODULE:APP`` (an importable module, or a path to a ``.py`` file)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError

if TYPE_CHECKING:
    from conveyor.sdk.app import Conveyor


def load_app(spec: str) -> Conveyor:
    from conveyor.sdk.app import Conveyor

    if not isinstance(spec, str) or not spec:
        raise ConfigError("expected MODULE:APP, e.g. myproject.jobs:app or jobs.py:app")
    target, _, attr = spec.rpartition(":") if ":" in spec else (spec, "", "app")
    attr = attr or "app"
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ConfigError(f"cannot load {spec!r}: no such file {target!r}")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot load {spec!r}: {target!r} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(f"cannot load {spec!r}: importing {target!r} raised {type(exc).__name__}: {exc}") \
                from None
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"cannot load {spec!r}: no module named {exc.name!r}") from None
        except Exception as exc:
            raise ConfigError(f"cannot load {spec!r}: importing {target!r} raised {type(exc).__name__}: {exc}") \
                from None
    app = getattr(module, attr, None)
    if app is None:
        raise ConfigError(f"cannot load {spec!r}: module {target!r} has no attribute {attr!r}")
    if not isinstance(app, Conveyor):
        raise ConfigError(f"cannot load {spec!r}: {attr!r} is a {type(app).__name__}, not a conveyor.Conveyor")
    return app
