"""Bearer keys: event keys may only send events; API tokens may do everything.

Keys are compared in constant time and never logged or echoed. With no key
configured at all the server is open, and the CLI only lets it listen on loopback.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.server.errors import ApiError, error_response

bearer = HTTPBearer(auto_error=False, description="An event key (intake only) or an API token")


class Keys:
    def __init__(self, event_keys: tuple[str, ...], api_tokens: tuple[str, ...]) -> None:
        self.enabled = bool(event_keys or api_tokens)
        self._tokens = [t.encode() for t in api_tokens]
        self._intake = [k.encode() for k in event_keys] + self._tokens

    def check(self, credentials: HTTPAuthorizationCredentials | None, *, intake: bool) -> None:
        if not self.enabled:
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("this server needs a key: send 'Authorization: Bearer <key>'")
        given = credentials.credentials.encode("utf-8", "surrogateescape")
        ok = False
        for key in self._intake if intake else self._tokens:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            what = "event key or API token" if intake else "API token"
            raise _unauthorized(f"the {what} is missing or wrong")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def intake_key(request: Request, credentials: Credentials) -> None:
    _keys(request).check(credentials, intake=True)


async def api_token(request: Request, credentials: Credentials) -> None:
    _keys(request).check(credentials, intake=False)


class AuthGate:
    """Checks the key of every ``/api/`` request before anything else reads it (a bad body
    sent without a key is a 401, not a 400). Push read-backs (``/api/v1/push/``) carry a
    request signature instead, checked by their route. The route dependencies above repeat
    the check and declare the scheme in the OpenAPI document."""

    def __init__(self, app: ASGIApp, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.keys.enabled or not path.startswith("/api/") \
                or path.startswith("/api/v1/push/"):
            await self.app(scope, receive, send)
            return
        credentials = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
                break
        intake = scope["method"] == "POST" and path.rstrip("/") == "/api/v1/events"
        try:
            self.keys.check(credentials, intake=intake)
        except ApiError as exc:
            await error_response(exc.status, exc.code, exc.message, exc.headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)
