"""JSON encoding of payloads and step outputs, with errors that say what is wrong."""

from __future__ import annotations

import json
import re
from typing import Any

from conveyor.errors import SerializationError


def _default(value: Any) -> Any:
    to_json = getattr(value, "__conveyor_json__", None)
    if to_json is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return to_json()


#: How deeply a payload may nest. Real data stays far below it; anything deeper could not be
#: served back (JSON encoders and the API's response models recurse) and is refused up front.
MAX_DEPTH = 100

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
_decode = json.JSONDecoder().decode


def dumps(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as compact JSON, or raise :class:`SerializationError`."""
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable ({type(exc).__name__}: {exc}); "
            "return plain dicts, lists, strings, numbers, booleans or None"
        ) from None
    # counting brackets rules out deep nesting for almost every payload; the rest is scanned
    if text.count("[") + text.count("{") > MAX_DEPTH and _nests_deeper(text, MAX_DEPTH):
        raise SerializationError(f"{what} nests more than {MAX_DEPTH} levels of lists and objects")
    return text


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
_NOT_A_BRACKET = str.maketrans("", "", "".join(chr(c) for c in range(128) if chr(c) not in "[]{}"))


def _nests_deeper(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests deeper than ``limit``, at C speed: drop the strings, keep the
    brackets (outside strings JSON is ASCII), then peel one level of empty pairs per pass."""
    brackets = _STRING.sub("", text).translate(_NOT_A_BRACKET)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub("", brackets)  # the pairs empty now: exactly one level
    return bool(brackets)


def loads(text: str | None) -> Any:
    return None if text is None else _decode(text)


def roundtrip(value: Any, *, what: str = "value") -> tuple[str, Any]:
    """Encode and decode again, so a first run sees exactly what a replay will see."""
    text = dumps(value, what=what)
    return text, _decode(text)
