"""Where a webhook may point: the SSRF guard.

Outside dev/test a webhook URL must be https and its host must resolve only to
public addresses: no loopback, private, shared (CGNAT), link-local, multicast,
reserved or unspecified ones, in IPv4 or IPv6, including IPv4 hidden inside IPv6
(mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64).

The URL is checked when a webhook is created or changed, and again on every
delivery *at the connection itself*: the delivery client's resolver (aiohttp)
resolves the host once, checks every address, and the connector connects to one
of those checked addresses. No second lookup happens between check and connect,
so a DNS answer that changes (rebinding) cannot slip a private address in; the
socket factory then checks the very address connected to once more (IP-literal
URLs never reach a resolver). TLS still verifies the certificate against the
host name (SNI), not the address.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import anyio
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType, SocketFactoryType

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
RESOLVE_TIMEOUT_S = 5.0


class BlockedTarget(Exception):
    """A URL or an address a webhook may not reach (the message says why)."""


class BlockedAddress(OSError):
    """Raised inside the delivery client: the address to connect to is forbidden."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def forbidden_reason(ip: IPAddress) -> str | None:
    """The kind of address ``ip`` is when a webhook may not connect to it
    ("loopback", "private", …), or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        for inner in embedded:
            reason = forbidden_reason(inner)
            if reason is not None:
                return reason
        if embedded and any(ip in net for net in _NAT64):
            return None  # NAT64 of a public IPv4 address: judged by that address
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("non-public", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` (an IP literal resolves to itself)."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedTarget(f"{host} does not resolve: {exc.strerror or exc}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    return addresses


class TargetPolicy:
    """The rules for webhook targets; ``allow_private`` is dev/test's relaxation."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def check_url_shape(self, url: str) -> tuple[str, int]:
        """Scheme, host and port of ``url`` as the rules want them (no lookup)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise BlockedTarget(f"Not a valid URL: {exc}") from exc
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.allow_private else ("https",)
        if scheme not in allowed:
            raise BlockedTarget(
                "The URL must start with https://"
                if not self.allow_private
                else "The URL must start with http:// or https://"
            )
        host = parts.hostname
        if not host:
            raise BlockedTarget("The URL has no host")
        return host, port or (443 if scheme == "https" else 80)

    async def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to; refuses if any of them is forbidden
        (a name that answers both public and private addresses is not trusted)."""
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT_S):
                addresses = await self.resolver(host, port)
        except TimeoutError as exc:
            raise BlockedTarget(f"{host} did not resolve in time") from exc
        if not addresses:
            raise BlockedTarget(f"{host} does not resolve")
        if self.allow_private:
            return addresses
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError as exc:
                raise BlockedTarget(f"{host} resolved to {address!r}, not an address") from exc
            reason = forbidden_reason(ip)
            if reason is not None:
                # the kind, not the address: an answer about an internal name
                # stays internal
                raise BlockedTarget(f"{host} is not allowed: it resolves to a {reason} address")
        return addresses

    async def check_url(self, url: str) -> None:
        """Raises :class:`BlockedTarget` when a webhook may not point at ``url``."""
        host, port = self.check_url_shape(url)
        await self.allowed_addresses(host, port)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the policy applied: a name with any forbidden
    answer does not resolve at all."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self.policy.allowed_addresses(host, port)
        except BlockedTarget as exc:
            raise BlockedAddress(str(exc)) from exc
        results: list[ResolveResult] = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


def _guarded_socket(policy: TargetPolicy) -> SocketFactoryType:
    """The socket factory: the last word on the exact address connected to
    (IP-literal URLs never reach a resolver)."""

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _canon, sockaddr = addr_info
        if not policy.allow_private:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = forbidden_reason(ip)
            if reason is not None:
                raise BlockedAddress(f"{ip} is not allowed: it is a {reason} address")
        return socket.socket(family=family, type=type_, proto=proto)

    return create


def guarded_session(policy: TargetPolicy, max_connections: int) -> aiohttp.ClientSession:
    """The delivery client: every connection resolved and checked by the policy, no
    proxy from the environment (a proxy would be the address checked, not the
    target), no cookies, TLS verified against the host name (SNI)."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        socket_factory=_guarded_socket(policy),
        use_dns_cache=False,
        limit=max_connections,
        limit_per_host=0,
        ssl=ssl.create_default_context(cafile=certifi.where()),
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


def blocked_reason(exc: BaseException) -> str | None:
    """The policy's reason when a client error comes from a refused address."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, BlockedAddress):
            return str(seen)
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, BlockedAddress):
            return str(os_error)
        seen = seen.__cause__ or seen.__context__
    return None
