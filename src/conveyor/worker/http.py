"""The push dispatcher's HTTP client: httpx, pooled keep-alive connections per endpoint.

``post`` returns the status, headers and body, or raises :class:`HttpError` when the
exchange failed (no connection, reset, malformed answer). Up to two ``307``/``308``
redirects to the same origin are followed (``/conveyor`` → ``/conveyor/``); the caller
bounds the whole exchange with ``asyncio.wait_for``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit


class HttpError(Exception):
    """The exchange failed: no connection, reset, malformed answer."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpClient:
    def __init__(self, max_idle: int = 64) -> None:
        import httpx

        self._httpx = httpx
        self._client: Any = httpx.AsyncClient(
            timeout=None, follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_idle),
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        for _ in range(3):
            try:
                r = await self._client.post(url, content=body, headers=headers)
            except self._httpx.HTTPError as exc:
                raise HttpError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
            if r.status_code in (307, 308) and "location" in r.headers:
                target = urljoin(url, r.headers["location"])
                if urlsplit(target)[:2] != urlsplit(url)[:2]:
                    raise HttpError(f"{url} redirects to another origin ({target}); register that URL instead")
                url = target
                continue
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        raise HttpError(f"{url} redirects too many times")

    async def aclose(self) -> None:
        await self._client.aclose()
