"""Request body limits, enforced before and while the body is read.

* A declared ``Content-Length`` over the limit is answered 413 at once, without
  reading a byte of the body; a body that grows past the limit while streaming
  (chunked, or lying about its length) is cut off with 413 as soon as it does.
* A single event (an intake body that starts with ``{``) may be no larger than one
  event's data plus its envelope: cut off as soon as it is.
* A body whose next chunk takes longer than ``chunk_timeout`` is answered 408: a
  client sending a byte a minute does not hold its request for ever.
* The bodies being read at once may hold at most ``budget`` bytes (declared lengths,
  or the whole limit for a body of unknown length): past that, 429 with ``Retry-After``
  rather than a server that runs out of memory.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.server.errors import ApiError, error_response

INTAKE = "/api/v1/events"
ENVELOPE = 64 * 1024  # an event's name, id and punctuation around its data


class BodyLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, *, chunk_timeout: float, max_event_bytes: int | None = None,
        budget: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_single = None if max_event_bytes is None else max_event_bytes + ENVELOPE
        self.budget = budget
        self.chunk_timeout = chunk_timeout
        self.in_flight = 0  # bytes reserved by the bodies being read (one event loop: no lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        length = None
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if length > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        reserved = 0
        if scope["method"] in ("POST", "PUT", "PATCH") and length != 0:
            reserved = self.max_bytes if length is None else length
            if self.budget is not None and self.in_flight + reserved > self.budget:
                await error_response(429, "overloaded", "too many request bodies are being read at once; retry",
                                     {"Retry-After": "1"})(scope, receive, send)
                return
        self.in_flight += reserved
        seen = 0
        limit = self.max_bytes
        single = self.max_single if scope.get("path", "").rstrip("/") == INTAKE else None

        async def limited() -> Message:
            nonlocal seen, limit, single
            try:
                async with asyncio.timeout(self.chunk_timeout):  # (no task per chunk, as wait_for makes)
                    message = await receive()
            except TimeoutError:
                raise ApiError(408, "timeout", f"the request body stalled for over {self.chunk_timeout:g} s") from None
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if single is not None:  # until the body's first character is known
                    start = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()  # after whitespace and a BOM
                    if start:
                        if start[:1] == b"{":  # one event: at most its data's limit and an envelope
                            limit = min(limit, single)
                        single = None
                seen += len(chunk)
                if seen > limit:
                    raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.in_flight -= reserved

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "too_large", f"the request body is over {self.max_bytes} bytes", {"Connection": "close"}
        )
        await response(scope, receive, send)
