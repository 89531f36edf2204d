"""Which service owns a public path (docs/LAYOUT.md), and which paths are open."""

from __future__ import annotations

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
    ("/api/leads", "leads"),
    ("/api/pipeline", "leads"),
    ("/api/webhooks", "webhooks"),
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
    return path.rstrip("/") in PUBLIC_PATHS
