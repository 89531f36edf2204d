"""The reverse proxy: one pooled httpx client, bodies streamed both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from clarin_common.errors import PayloadTooLarge
from clarin_common.logging import REQUEST_ID_HEADER
from clarin_gateway.clientip import ClientInfo
from clarin_gateway.exceptions import UpstreamTimedOut, UpstreamUnavailable
from clarin_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

# RFC 9110 §7.6.1 connection-specific headers, never forwarded in either direction
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# set by the gateway itself
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
}


def _connection_listed(headers: list[tuple[str, str]]) -> set[str]:
    """Header names a ``Connection`` header declares hop-by-hop."""
    names: set[str] = set()
    for key, value in headers:
        if key == "connection":
            names.update(part.strip().lower() for part in value.split(",") if part.strip())
    return names


def upstream_request_headers(request: Request, client: ClientInfo) -> list[tuple[str, str]]:
    raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.scope["headers"]]
    drop = _REQUEST_DROP | _connection_listed(raw)
    headers = [(k, v) for k, v in raw if k not in drop]
    # only what trusted proxies said, then the peer: a client cannot plant an address
    headers.append(("x-forwarded-for", ", ".join(client.forwarded_for)))
    headers.append(("x-forwarded-proto", client.scheme))
    host = request.headers.get("host")
    if host:
        headers.append(("x-forwarded-host", host))
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers.append((REQUEST_ID_HEADER.lower(), request_id))
    return headers


def _same_origin_location(value: str, upstream_base: str) -> str:
    """A ``Location`` that names the service's own (internal) address, as a path on
    the gateway's origin; any other value as it is."""
    base = upstream_base.rstrip("/")
    if value == base or value.startswith(base + "/") or value.startswith(base + "?"):
        return value[len(base) :] or "/"
    return value


def response_headers(upstream: httpx.Response, upstream_base: str) -> list[tuple[bytes, bytes]]:
    raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in upstream.headers.raw]
    drop = HOP_BY_HOP | _connection_listed(raw)
    return [
        (
            k.encode("latin-1"),
            (_same_origin_location(v, upstream_base) if k == "location" else v).encode("latin-1"),
        )
        for k, v in raw
        # CORS is the gateway's business (one origin policy, no duplicated headers);
        # the request id is set again by the gateway's middleware
        if k not in drop and not k.startswith("access-control-") and k != "x-request-id"
    ]


class BodyTooLarge(Exception):
    """The request body went past its limit while streaming."""


async def capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``stream`` as it arrives, stopping with :class:`BodyTooLarge` before the chunk
    that would pass ``limit`` is handed on (nothing past the limit reaches a service)."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        yield chunk


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


class Proxy:
    """Holds the pooled client for the app's lifetime."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.upstreams = settings.upstreams()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.upstream_connect_timeout,
                read=settings.upstream_read_timeout,
                write=settings.upstream_write_timeout,
                pool=settings.upstream_pool_timeout,
            ),
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_keepalive,
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def url_for(self, service: str, request: Request) -> str:
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        url = self.upstreams[service] + raw_path.decode("latin-1")
        query: bytes = request.scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        return url

    async def forward(
        self,
        service: str,
        request: Request,
        client: ClientInfo,
        body: bytes | None,
        body_limit: int,
    ) -> Response:
        """Send ``request`` to ``service``; ``body`` when the gateway already read it,
        else the body is streamed as it arrives, cut off past ``body_limit``
        (:class:`PayloadTooLarge`)."""
        content: bytes | AsyncIterator[bytes] | None
        if body is not None:
            content = body
        elif _has_body(request):
            content = capped(request.stream(), body_limit)
        else:
            content = None
        upstream_request = self.client.build_request(
            request.method,
            self.url_for(service, request),
            headers=upstream_request_headers(request, client),
            content=content,
        )
        try:
            upstream = await self.client.send(upstream_request, stream=True)
        except BodyTooLarge as exc:
            # the service saw the connection drop mid-body and keeps nothing of it
            log.info("request_body_too_large", service=service, limit=body_limit)
            raise PayloadTooLarge() from exc
        except ClientDisconnect:
            # the client went away mid-upload; nobody is left to answer
            log.info("client_disconnected_during_upload", service=service)
            return Response(status_code=499)
        except httpx.TimeoutException as exc:
            log.warning("upstream_timeout", service=service, error=type(exc).__name__)
            raise UpstreamTimedOut(service) from exc
        except (httpx.TransportError, OSError) as exc:
            log.warning("upstream_unreachable", service=service, error=repr(exc))
            raise UpstreamUnavailable(service) from exc
        return _build_response(upstream, service, self.upstreams[service])


def _build_response(upstream: httpx.Response, service: str, base: str) -> StreamingResponse:
    response = StreamingResponse(
        _relay(upstream, service),
        status_code=upstream.status_code,
        background=BackgroundTask(upstream.aclose),
    )
    # replace Starlette's defaults with the upstream's headers, raw and in order
    response.raw_headers = response_headers(upstream, base)
    return response


async def _relay(upstream: httpx.Response, service: str) -> AsyncIterator[bytes]:
    """The upstream body as it arrives, undecoded (Content-Encoding passes through)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # the status line is already out; all we can do is cut the response short
        log.warning("upstream_body_failed", service=service, error=repr(exc))
        raise
    finally:
        # also when the client went away mid-download: give the connection back
        await upstream.aclose()
