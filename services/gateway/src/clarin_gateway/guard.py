"""What the gateway decides about a request before any routing.

:class:`PathGuard` turns the request's raw path into one normalised path (or a
400 ``bad_path``) and writes it back into the ASGI scope, so that routing, rate
limits, publicness and the path forwarded to a service are all the same value.
:class:`SecurityHeaders` adds the browser hardening headers to every answer.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote_to_bytes

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarin_common.errors import error_body

# encoded separators (/ and \) and encoded percent signs (a double encoding such
# as %252F becomes %2F after the first decode, which a service may decode again)
_ENCODED_SEPARATOR = re.compile(rb"%(?:2f|5c|25)", re.IGNORECASE)
# characters left as they are when the decoded path is encoded again (RFC 3986 pchar + "/")
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


class BadPath(ValueError):
    pass


def normalise_path(raw_path: bytes) -> tuple[str, bytes]:
    """The decoded path and the raw path to forward, for a request's raw path.

    A trailing slash is dropped (``/api/leads/`` is ``/api/leads``: the route
    answers, nobody redirects). Dot segments, empty segments (``//``), encoded
    slashes and backslashes, encoded percent signs, control characters and
    invalid UTF-8 raise :class:`BadPath`: such a path has two readings, and a
    service or library might pick the other one.
    """
    if not raw_path.startswith(b"/"):
        raise BadPath("the path must start with /")
    if b"\\" in raw_path or _ENCODED_SEPARATOR.search(raw_path):
        raise BadPath("encoded separators are not allowed in the path")
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPath("the path is not valid UTF-8") from exc
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        raise BadPath("control characters are not allowed in the path")
    if decoded == "/":
        return "/", b"/"
    if decoded.endswith("/"):
        decoded = decoded[:-1]
    for segment in decoded[1:].split("/"):
        if segment in ("", ".", ".."):
            raise BadPath("empty, '.' and '..' segments are not allowed in the path")
    return decoded, quote(decoded, safe=_PATH_SAFE).encode("ascii")


class PathGuard:
    """Normalises ``scope["path"]``/``scope["raw_path"]`` or answers 400 ``bad_path``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        try:
            path, raw_path = normalise_path(raw)
        except BadPath as exc:
            if scope["type"] == "websocket":
                # refusing the handshake answers 403 to the client
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_json(send, 400, error_body("bad_path", str(exc)))
            return
        scope["path"] = path
        scope["raw_path"] = raw_path
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


# The built web app loads its script and stylesheet from /assets, talks to /api
# and /ws on the same origin, and shows media as blob: URLs; nothing inline.
APP_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# HTML that a service answers (an uploaded .html file downloaded as media): shown
# as inert text-like content, never as a page of this origin
API_HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"
REFERRER_POLICY = "strict-origin-when-cross-origin"


class SecurityHeaders:
    """``nosniff`` and a Referrer-Policy on every answer; a Content-Security-Policy
    with ``frame-ancestors 'none'`` (and ``X-Frame-Options`` for old browsers) on
    every HTML answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # read now: PathGuard (inside this middleware) normalised it in place
                from_service = scope["path"].startswith("/api/")
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = REFERRER_POLICY
                if headers.get("content-type", "").lower().startswith("text/html"):
                    if from_service:
                        headers["Content-Security-Policy"] = API_HTML_CSP
                    else:
                        # a page of the gateway's own may bring a stricter or its own policy
                        headers.setdefault("Content-Security-Policy", APP_CSP)
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
