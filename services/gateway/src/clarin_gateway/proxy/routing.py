"""Which service owns a public path (docs/LAYOUT.md), which paths are open, and
how large a request body each may send. Paths here are already normalised
(:mod:`clarin_gateway.guard`): no trailing slash, no dot segments.

Adding a route of an existing service is one line in ``_ROUTES`` (and one in
``BODY_LIMITS`` if it takes uploads).
"""

from __future__ import annotations

from typing import Literal

# (prefix, service). A prefix ending in "/" matches below it; otherwise it also
# matches the bare path and anything that continues it ("/api/users" matches
# "/api/users" and "/api/users/…", never "/api/usersx").
_ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/auth/", "auth"),
    ("/api/users", "auth"),
    ("/api/devices", "devices"),
    ("/api/chats", "messaging"),
    ("/api/messages", "messaging"),
    ("/api/media", "messaging"),
    ("/api/search", "messaging"),
    ("/api/quick-replies", "messaging"),
    ("/api/leads", "leads"),
    ("/api/pipeline", "leads"),
    ("/api/webhooks", "webhooks"),
    ("/api/campaigns", "campaigns"),
)

# reached without an access token (the services decide on their own)
PUBLIC_PATHS = frozenset(
    {
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/openapi.json",
        "/api/docs",
    }
)

LOGIN_PATH = "/api/auth/login"
REGISTER_PATH = "/api/auth/register"
REFRESH_PATH = "/api/auth/refresh"
SEND_PATHS = frozenset({"/api/messages/send", "/api/messages/send/media"})

BodyKind = Literal["json", "upload", "credentials"]
# every other route may send up to GATEWAY_MAX_BODY_BYTES ("json")
BODY_LIMITS: dict[str, BodyKind] = {
    "/api/messages/send/media": "upload",
    LOGIN_PATH: "credentials",
    REGISTER_PATH: "credentials",
}


def service_for(path: str) -> str | None:
    """The service that owns ``path``, or None when no service does."""
    for prefix, service in _ROUTES:
        if prefix.endswith("/"):
            if path.startswith(prefix) and len(path) > len(prefix):
                return service
        elif path == prefix or path.startswith(prefix + "/"):
            return service
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS


def body_kind(path: str) -> BodyKind:
    return BODY_LIMITS.get(path, "json")
