"""Events as the engine stores them: checked, encoded, carrying the sender's trace context.

One function for every way in (``app.send``, HTTP intake, the HTTP producer's checks before
it sends), so an event refused by one is refused by all, with the same message.
"""

from __future__ import annotations

import time
from typing import Any

from conveyor.errors import InvalidInput
from conveyor.executor import codec
from conveyor.ids import new_id
from conveyor.records import INTERNAL_PREFIX, NewEvent

MAX_NAME = 256  # characters in an event name or id


def make_event(name: Any, data: Any, event_id: Any, trace: str | None = None) -> NewEvent:
    """A checked event to store. ``trace`` is the sender's W3C ``traceparent``: the runs it starts
    join that trace (the caller reads it from its current span, or an HTTP request's header)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("an event name must be a non-empty string")
    if name.startswith(INTERNAL_PREFIX):
        raise InvalidInput(f"event names starting with {INTERNAL_PREFIX!r} are reserved for Conveyor")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"event data must be a JSON object (a dict), got {type(data).__name__}")
    if event_id is None:
        event_id = new_id()
    elif not isinstance(event_id, str) or not event_id:
        raise InvalidInput("an event id must be a non-empty string")
    for what, text in (("name", name), ("id", event_id)):
        if len(text) > MAX_NAME:
            raise InvalidInput(f"an event {what} must be at most {MAX_NAME} characters")
        if "\x00" in text:
            raise InvalidInput(f"an event {what} must not contain NUL characters")
    payload = codec.dumps(data, what=f"the data of event {name!r}")
    for what, text in (("name", name), ("id", event_id), ("data", payload)):
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidInput(f"the event {what} is not valid Unicode (a lone surrogate)") from None
    return NewEvent(event_id, name, payload, time.time(), trace)
