"""The built web app: files from ``GATEWAY_STATIC_DIR`` with a single-page fallback."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from clarin_common.errors import NotFound

# never answered with the web app: these belong to the API, the hub and operations
_RESERVED = ("/api", "/ws", "/healthz", "/readyz", "/metrics")

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"

NOT_BUILT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Clarin</title></head>
<body style="font-family:system-ui,sans-serif;margin:3rem">
<h1>The Clarin web app is not built</h1>
<p>The gateway serves the web app from <code>{where}</code>, which does not exist.
Build it with <code>npm --prefix frontend run build</code> (or set
<code>GATEWAY_STATIC_DIR</code>). The API is available under <code>/api</code>;
see <a href="/api/docs">/api/docs</a>.</p>
</body></html>
"""


# the page above has an inline style and nothing else
NOT_BUILT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _reserved(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _RESERVED)


class WebApp:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, path: str) -> Path | None:
        """The file under the root for a URL path, or None (also for ``..`` escapes)."""
        relative = path.lstrip("/")
        if not relative:
            return None
        try:
            candidate = (self.root / relative).resolve()
        except (OSError, ValueError):
            return None
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    async def serve(self, request: Request) -> Response:
        path = request.url.path
        if _reserved(path):
            raise NotFound()
        if not self.root.is_dir():
            if _wants_html(request):
                return HTMLResponse(
                    NOT_BUILT_PAGE.format(where=self.root),
                    status_code=503,
                    headers={"Cache-Control": NO_CACHE, "Content-Security-Policy": NOT_BUILT_CSP},
                )
            raise NotFound()
        if path == "/":
            index = self.root / "index.html"
            if index.is_file():
                return FileResponse(index, headers={"Cache-Control": NO_CACHE})
        found = self._file(path)
        if found is not None:
            cache = IMMUTABLE if path.startswith("/assets/") else NO_CACHE
            return FileResponse(found, headers={"Cache-Control": cache})
        # an app route (/inbox, /leads/…) typed into the address bar: the app decides
        index = self.root / "index.html"
        if _wants_html(request) and not path.startswith("/assets/") and index.is_file():
            return FileResponse(index, headers={"Cache-Control": NO_CACHE})
        raise NotFound()


def _wants_html(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")
