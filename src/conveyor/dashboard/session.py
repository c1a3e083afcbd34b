"""Login sessions and CSRF tokens, with no server-side state.

When the server has auth configured, the dashboard needs an API token once: the
login form exchanges it for a session cookie ``v1.<expires>.<nonce>.<signature>``,
signed (HMAC-SHA256) with a key derived from that token. Every server process
started with the same tokens accepts the cookie, no session table is needed, and
removing a token from the configuration ends every session opened with it. Event
keys never open the dashboard: they may only send events.

Every action (a POST) carries a CSRF token, the HMAC of the session's nonce under
the same key, and must come from a page of this server (its ``Origin``, or else its
``Referer``, names this host). With no auth configured the dashboard is open (the
server then listens on loopback only), but actions still need an anonymous session
cookie and its CSRF token, so that another site open in the same browser cannot
drive them.

The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Secure`` on https, and expires
after :data:`SESSION_TTL`. Tokens are compared in constant time and never logged
or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE = "conveyor_session"
SESSION_TTL = 12 * 3600.0
_VERSION = "v1"
_SESSION_LABEL = b"conveyor/dashboard/session/v1"


def _derive(secret: str) -> bytes:
    """The signing key of the sessions opened with ``secret`` (an API token)."""
    return hmac.new(secret.encode("utf-8", "surrogateescape"), _SESSION_LABEL, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


#: The key of anonymous sessions when no token is configured. It is public, and need not be
#: secret: those sessions authorize nothing, and their CSRF tokens only prove that the form
#: was read by a page that could read the cookie, which another site cannot.
_OPEN_KEY = _derive("")


@dataclass(frozen=True, slots=True)
class Session:
    """Who is asking: ``via`` is ``cookie`` (logged in, or anonymous when the server is
    open) or ``bearer`` (an ``Authorization: Bearer <api token>`` header)."""

    nonce: str
    expires: float
    via: str
    key: bytes
    cookie: str | None = None  # a cookie to set on the response (a new anonymous session)

    @property
    def logged_in(self) -> bool:
        """Whether the page shows a logout button: a session opened through the login form."""
        return self.via == "cookie" and self.key != _OPEN_KEY


class Sessions:
    """Opens and checks sessions and CSRF tokens for one server configuration."""

    def __init__(self, api_tokens: Sequence[str], *, required: bool, ttl: float = SESSION_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        #: Whether a page needs a login: the server has auth configured (event keys alone
        #: included: then no one can log in, as no one can use the API).
        self.required = required or bool(api_tokens)
        self.ttl = ttl
        self._clock = clock
        self._tokens = [t.encode("utf-8", "surrogateescape") for t in api_tokens]
        self._keys = [_derive(t) for t in api_tokens] if self.required else [_OPEN_KEY]

    @property
    def can_login(self) -> bool:
        return bool(self._tokens)

    # ---- tokens -----------------------------------------------------------------------------------

    def token_key(self, given: str) -> bytes | None:
        """The signing key of the API token ``given``, or None if it is none of them. Every
        configured token is compared, in constant time, whatever matched first."""
        raw = given.encode("utf-8", "surrogateescape")
        found: bytes | None = None
        for token, key in zip(self._tokens, self._keys, strict=True):
            if hmac.compare_digest(raw, token) and found is None:
                found = key
        return found

    # ---- sessions ---------------------------------------------------------------------------------

    def open(self, key: bytes | None = None) -> Session:
        """A new session signed with ``key`` (a token's, from :meth:`token_key`; by default
        the anonymous key of an open server)."""
        key = key or _OPEN_KEY
        expires = int(self._clock() + self.ttl)
        nonce = _b64(os.urandom(18))
        body = f"{_VERSION}.{expires}.{nonce}"
        return Session(nonce, float(expires), "cookie", key, f"{body}.{_sign(key, body)}")

    def from_cookie(self, value: str | None) -> Session | None:
        """The session of a cookie, if it is well formed, signed by a current key and not expired."""
        if not value or len(value) > 200:
            return None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            return None
        expires = int(parts[1])
        now = self._clock()
        if not now < expires <= now + self.ttl + 60:
            return None
        body = ".".join(parts[:3])
        try:
            given = parts[3].encode("ascii")
        except UnicodeEncodeError:
            return None
        found: bytes | None = None
        for key in self._keys:
            if hmac.compare_digest(given, _sign(key, body).encode("ascii")) and found is None:
                found = key
        return None if found is None else Session(parts[2], float(expires), "cookie", found)

    def from_bearer(self, authorization: str | None) -> Session | None:
        """The session of an ``Authorization: Bearer <api token>`` header."""
        if not authorization or not self._tokens:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        key = self.token_key(token.strip())
        return None if key is None else Session("bearer", self._clock() + self.ttl, "bearer", key)

    # ---- CSRF -------------------------------------------------------------------------------------

    def csrf(self, session: Session) -> str:
        return _sign(session.key, f"csrf.{session.nonce}")

    def check_csrf(self, session: Session, given: str | None) -> bool:
        if not given:
            return False
        try:
            raw = given.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(raw, self.csrf(session).encode("ascii"))


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a request comes from a page of this host: its ``Origin`` (or, when a browser
    sent none, its ``Referer``) must name the host the request was sent to. Only the host and
    port are compared, not the scheme, so that a server behind a TLS-terminating proxy works."""
    host = (headers.get("host") or "").strip().lower()
    if not host:
        return False
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    source = headers.get("origin")
    if source is None:
        source = headers.get("referer")
    if not source or source == "null":
        return False
    try:
        netloc = urlsplit(source).netloc.lower()
    except ValueError:
        return False
    return netloc == host


def safe_next(path: str | None) -> str:
    """Where to go after logging in: a path of this server, never another site."""
    if not path or len(path) > 2000 or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x20 or c == "\\" for c in path):
        return "/"
    return path
