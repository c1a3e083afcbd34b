"""The push methods of :class:`~conveyor.Conveyor`: ``serve()``, ``serve_wsgi()``,
``register_endpoint()`` (see :mod:`conveyor.sdk.serve` for the endpoint itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.errors import ConfigError
from conveyor.sdk.serve import DEFAULT_MAX_BODY, AsgiEndpoint, WsgiEndpoint, make_endpoint

if TYPE_CHECKING:
    from conveyor.sdk.app import Conveyor
    from conveyor.sdk.push_client import Registration


class ServesPush:
    """The push methods of :class:`~conveyor.Conveyor` (a mixin: the app's code is served here)."""

    def serve(
        self,
        *,
        signing_key: str | None = None,
        fallback_signing_key: str | None = None,
        register: bool = False,
        url: str | None = None,
        server_url: str | None = None,
        pool: str | None = None,
        api_token: str | None = None,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float = 300.0,
        threads: int = 32,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> AsgiEndpoint:
        """The push endpoint of this app as an ASGI app (mount it: ``api.mount("/conveyor", app.serve())``).

        ``signing_key`` (else ``$CONVEYOR_SIGNING_KEY``) must be the server's; during a key
        rotation ``fallback_signing_key`` (``$CONVEYOR_SIGNING_KEY_FALLBACK``) is accepted too.
        With ``register=True`` the endpoint registers itself at ``url`` with the server
        (``server_url``, ``api_token``: see :meth:`register_endpoint`) from a background
        thread, as soon as it answers there. ``def`` functions run on ``threads`` threads.
        """
        endpoint = make_endpoint(self._app(), signing_key=signing_key, fallback_signing_key=fallback_signing_key,
                                 max_body=max_body)
        registration = self._registration(register, url, server_url, pool, api_token, concurrency, rate, timeout)
        return AsgiEndpoint(endpoint, threads=threads, registration=registration)

    def serve_wsgi(
        self,
        *,
        signing_key: str | None = None,
        fallback_signing_key: str | None = None,
        register: bool = False,
        url: str | None = None,
        server_url: str | None = None,
        pool: str | None = None,
        api_token: str | None = None,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float = 300.0,
        threads: int = 32,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> WsgiEndpoint:
        """The push endpoint as a WSGI app (Flask, Django); the options are those of :meth:`serve`."""
        endpoint = make_endpoint(self._app(), signing_key=signing_key, fallback_signing_key=fallback_signing_key,
                                 max_body=max_body)
        registration = self._registration(register, url, server_url, pool, api_token, concurrency, rate, timeout)
        return WsgiEndpoint(endpoint, threads=threads, registration=registration)

    def register_endpoint(
        self,
        url: str,
        *,
        server_url: str | None = None,
        pool: str | None = None,
        api_token: str | None = None,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float = 300.0,
    ) -> None:
        """Tell ``conveyor server`` (``server_url``, else the app's, else ``$CONVEYOR_SERVER_URL``)
        that ``url`` serves this app's functions for ``pool`` (default: the functions' pool, if
        they share one): at most ``concurrency`` invocations in flight, ``rate`` started per
        second, ``timeout`` seconds per request. ``api_token`` (``$CONVEYOR_API_TOKEN``) is an
        API token of the server. Registering a URL again updates it."""
        from conveyor.sdk.push_client import endpoint_document, post_registration, server_settings

        doc = endpoint_document(self._app(), url, pool=pool, concurrency=concurrency, rate=rate, timeout=timeout)
        post_registration(*server_settings(self._app(), server_url, api_token), doc)

    def _registration(
        self, register: bool, url: str | None, server_url: str | None, pool: str | None, api_token: str | None,
        concurrency: int, rate: float | None, timeout: float,
    ) -> Registration | None:
        if not register:
            return None
        if url is None:
            raise ConfigError("register=True needs url=: the address at which the server reaches this endpoint")
        from conveyor.sdk.push_client import Registration, endpoint_document, server_settings

        doc = endpoint_document(self._app(), url, pool=pool, concurrency=concurrency, rate=rate, timeout=timeout)
        return Registration(*server_settings(self._app(), server_url, api_token), doc).start()

    def _app(self) -> Conveyor:
        return self  # type: ignore[return-value]
