"""The client's address: the peer, or what a trusted proxy says in X-Forwarded-For.

uvicorn's own ``proxy_headers`` is off (it would trust any local peer); this is
the one place that reads ``X-Forwarded-For`` and ``X-Forwarded-Proto``, and only
when the peer is one of ``GATEWAY_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks; raises ValueError on anything else."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


@dataclass(frozen=True)
class ClientInfo:
    ip: str
    scheme: str
    # the X-Forwarded-For chain to hand on: the trusted part of what came in, then the peer
    forwarded_for: list[str]


class TrustedProxies:
    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def client(self, conn: HTTPConnection) -> ClientInfo:
        """Who is on the other side of ``conn``.

        The chain ``X-Forwarded-For: a, b`` + peer ``c`` is read from the right:
        while the hop is a trusted proxy, the address before it is believed.
        The first address that is not a trusted proxy is the client; anything
        left of it was written by the client and is ignored.
        """
        peer = conn.client.host if conn.client else "unknown"
        scheme = conn.url.scheme.replace("ws", "http", 1)
        if not self.trusts(peer):
            return ClientInfo(ip=peer, scheme=scheme, forwarded_for=[peer])
        chain = [
            part.strip()
            for value in conn.headers.getlist("x-forwarded-for")
            for part in value.split(",")
            if part.strip()
        ]
        hops = [*chain, peer]
        client_index = len(hops) - 1
        while client_index > 0 and self.trusts(hops[client_index]):
            client_index -= 1
        proto = conn.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
        return ClientInfo(ip=hops[client_index], scheme=scheme, forwarded_for=hops[client_index:])
