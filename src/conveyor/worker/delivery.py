"""The push dispatcher's pieces: endpoints, their limits, jobs in flight, and one exchange.

* :class:`Flight` — one claimed job on its way through an endpoint (it may make several
  trips: one per step, while the run keeps yielding after a checkpoint);
* :class:`EndpointState` — one registered endpoint: its settings, the invocations in flight
  there (never more than ``concurrency``), and a token bucket for its ``rate``;
* :class:`FailureCounter` — consecutive failed deliveries per run, and the backoff before
  the next one;
* :class:`Courier` — one signed request with a batch of invocations, and its checked answer.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.errors import InvalidInput
from conveyor.executor.inputs import InvocationInput
from conveyor.ids import new_id
from conveyor.push.protocol import PushRequest, PushResult, decode_response, encode_request
from conveyor.push.signing import HEADER, SignatureError, Verifier, sign
from conveyor.records import Suspended
from conveyor.storage.base import ClaimedJob, Endpoint
from conveyor.types import Backoff
from conveyor.worker.http import HttpClient, HttpError


@dataclass(slots=True, eq=False)
class Flight:
    job: ClaimedJob
    input: InvocationInput
    endpoint: EndpointState
    started: float = field(default_factory=time.monotonic)
    lost: bool = False  # its lease was lost: nothing it reports will be committed


class TokenBucket:
    """At most ``rate`` invocations started per second on average, bursts of one second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.updated = time.monotonic()

    async def acquire(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class EndpointState:
    """A registered endpoint as the dispatcher sees it (mutated under the dispatcher's lock)."""

    def __init__(self, spec: Endpoint) -> None:
        self.spec = spec
        self.inflight = 0
        self.removed = False
        self.queue: list[Flight] = []
        self.flush_scheduled = False
        self.bucket: TokenBucket | None = TokenBucket(spec.rate) if spec.rate else None

    @property
    def url(self) -> str:
        return self.spec.url

    def update(self, spec: Endpoint) -> None:
        if spec.rate != self.spec.rate:
            self.bucket = TokenBucket(spec.rate) if spec.rate else None
        self.spec = spec
        self.removed = False

    def free(self) -> int:
        return 0 if self.removed else max(0, self.spec.concurrency - self.inflight)


class FailureCounter:
    """Consecutive delivery failures per run; forgotten on success, or after ``forget`` seconds."""

    def __init__(self, backoff: Backoff, forget: float = 3600.0) -> None:
        self.backoff = backoff
        self.forget = forget
        self._counts: dict[str, tuple[int, float]] = {}

    def failed(self, run_id: str) -> int:
        n = self._counts.get(run_id, (0, 0.0))[0] + 1
        self._counts[run_id] = (n, time.monotonic())
        return n

    def succeeded(self, run_id: str) -> None:
        self._counts.pop(run_id, None)

    def delay(self, failures: int) -> float:
        b = self.backoff
        return min(b.cap, b.base * b.factor ** (failures - 1)) * (1.0 - b.jitter * random.random())

    def prune(self) -> None:
        cutoff = time.monotonic() - self.forget
        self._counts = {k: v for k, v in self._counts.items() if v[1] > cutoff}


class GroupAck:
    """The commit verdicts of several results, handed to an event loop in one wake-up.

    ``part(i)`` is what a result carries as its ``ack`` (the committer calls ``set_result``);
    ``future`` resolves, in the loop, with every verdict once the last one is in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[bool]] = loop.create_future()
        self._verdicts = [False] * n
        self._left = n
        self._lock = threading.Lock()

    def part(self, index: int) -> _AckPart:
        return _AckPart(self, index)

    def _set(self, index: int, ok: bool) -> None:
        with self._lock:
            self._verdicts[index] = ok
            self._left -= 1
            last = self._left == 0
        if last:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():  # (cancelled: the dispatcher is stopping)
            self.future.set_result(self._verdicts)


class _AckPart:
    __slots__ = ("_done", "_group", "_index")

    def __init__(self, group: GroupAck, index: int) -> None:
        self._group = group
        self._index = index
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, ok: bool) -> None:
        self._done = True
        self._group._set(self._index, ok)


class DeliveryError(Exception):
    """Why a request to an endpoint produced nothing to commit; ``reason`` is its kind, one of
    ``timeout``, ``connection``, ``http_status``, ``signature``, ``malformed`` (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Courier:
    """Sends a batch of invocation inputs to an endpoint, signed, and checks the answer."""

    def __init__(self, client: HttpClient, keys: Sequence[str], view_url: str | None) -> None:
        self.client = client
        self.keys = tuple(keys)
        self.verifier = Verifier(self.keys, replay_guard=False)
        self.view_url = view_url

    async def send(self, state: EndpointState, flights: list[Flight]) -> dict[str, PushResult]:
        """The results by run id; :class:`DeliveryError` if there is nothing to commit."""
        now = time.time() + max(f.job.skew for f in flights)  # the database clock, as of sending
        body = encode_request(PushRequest([f.input for f in flights], now, self.view_url))
        request_id = new_id()
        headers = {HEADER: sign(body, self.keys, request_id=request_id), "Content-Type": "application/json"}
        timeout = state.spec.timeout
        sent = time.monotonic()
        try:
            reply = await asyncio.wait_for(self.client.post(state.url, body, headers), timeout)
        except TimeoutError:
            raise DeliveryError("timeout", f"no answer within {timeout:g}s") from None
        except HttpError as exc:
            raise DeliveryError("connection", str(exc)) from None
        if reply.status != 200:
            raise DeliveryError("http_status", f"HTTP {reply.status}: {reply.body[:200]!r}")
        try:
            self.verifier.verify(reply.headers.get("conveyor-signature"), reply.body, request_id=request_id)
            results = decode_response(reply.body)
        except SignatureError as exc:
            raise DeliveryError("signature", f"the answer's signature is not valid: {exc.message}") from None
        except (InvalidInput, ValueError) as exc:  # a ProtocolError: a malformed answer
            raise DeliveryError("malformed", str(exc)) from None
        return {r.run_id: never_early(r, time.monotonic() - sent) for r in results}


def never_early(result: PushResult, round_trip: float) -> PushResult:
    """Move the wake-up times the endpoint reported later by the request's round trip.

    The endpoint set its clock to the database's ``now`` of the request, which was read before
    the request travelled: its clock is behind by the time in transit, and a sleep or retry it
    scheduled would wake that much early. The round trip bounds the transit, so timers are
    never early (as pull workers ensure by measuring their clock skew from before a claim)."""
    for write in result.writes:
        if write.wake_at is not None:
            write.wake_at += round_trip
    outcome = result.outcome
    if isinstance(outcome, Suspended) and outcome.run_at is not None:
        outcome.run_at += round_trip
    return result
