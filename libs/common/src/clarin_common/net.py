"""Is anything listening? TCP probes of the servers' URLs.

nats-py's ``connect()`` can hang on a closed port, and ``make run`` starts an
embedded server only where nothing answers: both ask these first.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

DEFAULT_PORTS: Mapping[str, int] = {
    "postgresql": 5432,
    "postgres": 5432,
    "redis": 6379,
    "rediss": 6379,
    "nats": 4222,
    "tls": 4222,
}


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_port(url: str) -> tuple[str, int]:
    """Host and port of one postgres/redis/nats URL (the scheme's default port if none)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.split("+", 1)[0].lower()
    host = parts.hostname or "127.0.0.1"
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if port is None:
        raise ValueError(f"no port in {url!r} and no default for scheme {scheme!r}")
    return host, port


def url_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether the host/port of a postgres/redis/nats URL accepts TCP connections.

    A comma-separated NATS server list answers if any of its servers does.
    """
    return any(tcp_answers(*host_port(u), timeout=timeout) for u in url.split(",") if u.strip())
