"""Server settings, read from flags and ``CONVEYOR_*`` variables by the CLI."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

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
    max_backlog: int | None = None  # due jobs in the database above which intake answers 429
    signing_keys: tuple[str, ...] = ()  # push signing: the current key, then a fallback
    public_url: str | None = None  # how push endpoints reach this server
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.event_keys or self.api_tokens)

    def check(self) -> None:
        for what, keys in (("event key", self.event_keys), ("API token", self.api_tokens)):
            for key in keys:
                if len(key) < 8:
                    raise ConfigError(f"an {what} must be at least 8 characters long")
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
