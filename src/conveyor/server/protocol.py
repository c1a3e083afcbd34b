"""uvicorn's httptools protocol with a cap on the size of a request's head.

httptools itself buffers header lines of any size; a client sending megabytes of
headers would be read to the end. Here a head still incomplete after
``MAX_HEAD_BYTES`` is answered ``431`` and the connection closed.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024

_BODY = json.dumps({"error": {"code": "headers_too_large",
                              "message": f"the request line and headers are over {MAX_HEAD_BYTES} bytes"}}).encode()
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class HeadLimitedProtocol(HttpToolsProtocol):
    _in_head = True
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size() > MAX_HEAD_BYTES:
            raise _HeadTooLarge  # the parser turns it into an error: see send_400_response
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._reject()

    def send_400_response(self, msg: str) -> None:
        if max(self._head_bytes, self._head_size()) > MAX_HEAD_BYTES:
            self._reject()
        else:
            super().send_400_response(msg)

    def _head_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

    def _reject(self) -> None:
        self.transport.write(_RESPONSE)
        self.transport.close()


class _HeadTooLarge(Exception):
    pass
