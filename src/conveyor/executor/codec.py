"""JSON encoding of payloads and step outputs, with errors that say what is wrong."""

from __future__ import annotations

import json
from typing import Any

from conveyor.errors import SerializationError


def _default(value: Any) -> Any:
    to_json = getattr(value, "__conveyor_json__", None)
    if to_json is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return to_json()


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
_decode = json.JSONDecoder().decode


def dumps(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as compact JSON, or raise :class:`SerializationError`."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable ({type(exc).__name__}: {exc}); "
            "return plain dicts, lists, strings, numbers, booleans or None"
        ) from None


def loads(text: str | None) -> Any:
    return None if text is None else _decode(text)


def roundtrip(value: Any, *, what: str = "value") -> tuple[str, Any]:
    """Encode and decode again, so a first run sees exactly what a replay will see."""
    text = dumps(value, what=what)
    return text, _decode(text)
