"""HMAC signatures of push requests and responses, with a replay window and key rotation.

A signed message carries one header::

    Conveyor-Signature: t=<unix seconds>,id=<request id>,v1=<hex>[,v1=<hex>...]

where each ``v1`` is ``hmac_sha256(key, f"{t}.{id}.".encode() + body)`` for one of the
signer's keys (the current one, and the fallback during a rotation). A verifier accepts
the message if any ``v1`` matches any of its keys, ``t`` is within ``tolerance`` seconds
of its clock, and (when it keeps a replay guard) it has not seen that request id within
the window. The dispatcher signs its requests; the endpoint signs its response with the
same request id, so a response cannot be replayed for another request.

Keys are never logged, echoed or put in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.errors import ConfigError, ConveyorError

HEADER = "Conveyor-Signature"
TOLERANCE = 300.0  # seconds between the signer's clock and the verifier's
MIN_KEY_LENGTH = 16
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class SignatureError(ConveyorError):
    """A message is unsigned, badly signed, stale or replayed (HTTP 401)."""

    code = "unauthorized"


@dataclass(frozen=True, slots=True)
class Signed:
    """A verified signature: when it was made, and for which request."""

    timestamp: int
    request_id: str


def check_keys(keys: Sequence[str | None], what: str = "signing key") -> tuple[str, ...]:
    """The usable keys (``None`` entries dropped); raise ``ConfigError`` if none or a short one."""
    out = tuple(k for k in keys if k is not None)
    if not out:
        raise ConfigError(f"push delivery needs a {what}: pass signing_key= or set CONVEYOR_SIGNING_KEY")
    for key in out:
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"a {what} must be a string of at least {MIN_KEY_LENGTH} characters")
    return out


MAX_SIGNATURES = 4  # v1 values in one header


def _mac(key: str, timestamp: int, request_id: str, body: bytes) -> str:
    mac = hmac.new(key.encode(), f"{timestamp}.{request_id}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(body: bytes, keys: Sequence[str], *, request_id: str, timestamp: float | None = None) -> str:
    """The ``Conveyor-Signature`` value of ``body``: one ``v1`` per key."""
    if not _ID.fullmatch(request_id):
        raise ValueError("a request id is 1-64 characters of [A-Za-z0-9._:-]")
    t = int(time.time() if timestamp is None else timestamp)
    macs = ",".join(f"v1={_mac(key, t, request_id, body)}" for key in keys)
    return f"t={t},id={request_id},{macs}"


def parse(header: str) -> tuple[int, str, list[str]]:
    """``(timestamp, request id, v1 signatures)`` of a header value, or ``SignatureError``."""
    t: int | None = None
    request_id: str | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t" and value.isdigit() and len(value) <= 12:
            t = int(value)
        elif name == "id" and _ID.fullmatch(value):
            request_id = value
        elif name == "v1" and len(value) == 64:
            macs.append(value)
    if t is None or request_id is None or not macs:
        raise SignatureError(f"malformed {HEADER} header: expected t=<seconds>,id=<request id>,v1=<hmac>")
    if len(macs) > MAX_SIGNATURES:  # each costs a comparison; a signer holds one key, two while rotating
        raise SignatureError(f"malformed {HEADER} header: more than {MAX_SIGNATURES} v1 signatures")
    return t, request_id, macs


class ReplayGuard:
    """Request ids seen within the window (in this process)."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def first_time(self, request_id: str, timestamp: float) -> bool:
        """Remember ``request_id`` (signed at ``timestamp``) until its signature goes stale; False if
        it was already seen."""
        now = self.clock()
        with self._lock:
            if now >= self._next_prune:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                self._next_prune = now + min(self.window, 10.0)
            expires = self._seen.get(request_id)
            if expires is not None and expires > now:
                return False
            self._seen[request_id] = timestamp + self.window + 1.0
            return True


class Verifier:
    """Checks signatures made with any of ``keys`` (the current key first, then a fallback)."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        tolerance: float = TOLERANCE,
        clock: Callable[[], float] = time.time,
        replay_guard: bool = True,
    ) -> None:
        self._keys = check_keys(keys)
        self.tolerance = tolerance
        self.clock = clock
        self._guard = ReplayGuard(tolerance, clock) if replay_guard else None

    def verify(self, header: str | None, body: bytes, *, request_id: str | None = None) -> Signed:
        """Check ``header`` against ``body``; raise :class:`SignatureError` unless it is good.

        ``request_id``: the id the signature must carry (a response to that request).
        """
        if not header:
            raise SignatureError(f"the {HEADER} header is missing: this endpoint only accepts signed requests")
        t, rid, macs = parse(header)
        if abs(self.clock() - t) > self.tolerance:
            raise SignatureError(f"the signature is stale: its timestamp is over {self.tolerance:.0f}s from now")
        # one HMAC of the body per key we hold (not per key and signature: the body may be large)
        expected = [_mac(key, t, rid, body) for key in self._keys]
        if not any(hmac.compare_digest(mac, want) for want in expected for mac in macs):
            raise SignatureError("the signature does not match (wrong key, or the body was altered)")
        if request_id is not None and rid != request_id:
            raise SignatureError("the signature is for another request")
        if self._guard is not None and not self._guard.first_time(rid, t):
            raise SignatureError("this request was already received (replayed request id)")
        return Signed(t, rid)
