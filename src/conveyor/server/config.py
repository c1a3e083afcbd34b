"""Server settings, read from flags and ``CONVEYOR_*`` variables by the CLI."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from conveyor.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8288
    event_keys: tuple[str, ...] = ()
    api_tokens: tuple[str, ...] = ()
    max_event_bytes: int = 1 * MiB  # JSON of one event's data
    max_body_bytes: int = 16 * MiB  # one request body
    max_batch: int = 1000  # events in one request
    max_pending: int = 50_000  # events accepted but not yet committed, in this process
    max_inflight_bytes: int = 256 * MiB  # request bodies being read at once, in this process
    read_timeout: float = 10.0  # seconds a request's headers, or each chunk of its body, may take
    max_backlog: int | None = None  # due jobs in the database above which intake answers 429
    signing_keys: tuple[str, ...] = ()  # push signing: the current key, then a fallback
    public_url: str | None = None  # how push endpoints reach this server

    @property
    def auth_enabled(self) -> bool:
        return bool(self.event_keys or self.api_tokens)

    def check(self) -> None:
        for what, keys in (("event key", self.event_keys), ("API token", self.api_tokens)):
            for key in keys:
                if len(key) < 8:
                    raise ConfigError(f"an {what} must be at least 8 characters long")
                if not (key.isascii() and key.isprintable()) or " " in key:
                    raise ConfigError(f"an {what} must be printable ASCII without spaces (it travels in a header)")
        limits = (("max_event_bytes", self.max_event_bytes), ("max_body_bytes", self.max_body_bytes),
                  ("max_batch", self.max_batch), ("max_inflight_bytes", self.max_inflight_bytes))
        for name, value in limits:
            if value < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 0 < self.read_timeout <= 3600:
            raise ConfigError("read_timeout must be between 0 and 3600 seconds")
        if self.max_body_bytes > self.max_inflight_bytes:
            raise ConfigError("max_inflight_bytes must be at least max_body_bytes")
        if not self.auth_enabled and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without event keys or API tokens; set "
                "--event-key/--api-token (or CONVEYOR_EVENT_KEYS/CONVEYOR_API_TOKENS), or listen on 127.0.0.1"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keys_from_env(name: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())
