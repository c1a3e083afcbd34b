"""uvicorn's httptools protocol with limits on a request's head.

httptools itself buffers header lines of any size and waits for them for ever; a
client sending megabytes of headers would be read to the end, and one sending a
byte a minute would hold its connection for good. Here a head still incomplete
after ``MAX_HEAD_BYTES`` is answered ``431``, one still incomplete ``head_timeout``
seconds after it began (or after the connection opened) is answered ``408``, and a
request line or header the parser refuses is a JSON ``400``; each closes the
connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.server.config import ServerConfig

MAX_HEAD_BYTES = 32 * 1024


def _response(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


_TOO_LARGE = _response("431 Request Header Fields Too Large", "headers_too_large",
                       f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
_MALFORMED = _response("400 Bad Request", "bad_request", "malformed HTTP request")


class HeadLimitedProtocol(HttpToolsProtocol):
    head_timeout = ServerConfig.read_timeout  # seconds to a request's blank line; the server's --read-timeout
    _in_head = True
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        if self._head_size() > MAX_HEAD_BYTES:
            raise _HeadTooLarge  # the parser turns it into an error: see send_400_response
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._close_with(_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        too_large = max(self._head_bytes, self._head_size()) > MAX_HEAD_BYTES
        self._close_with(_TOO_LARGE if too_large else _MALFORMED)

    def _head_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._close_with(_response("408 Request Timeout", "timeout",
                                       f"the request's headers took over {self.head_timeout:g} s"))

    def _close_with(self, response: bytes) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


class _HeadTooLarge(Exception):
    pass
