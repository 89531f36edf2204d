"""One OpenAPI document for the whole public API, merged from the services'.

Each service serves its own ``/openapi.json``; the gateway keeps the ``/api``
paths of each, merges ``components`` (renaming a schema that two services define
differently), caches the result briefly, and leaves out a service that is down.
"""

from __future__ import annotations

import asyncio
import copy
import html
import time
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

_REF_PREFIX = "#/components/"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _rewrite_refs(node: Any, renames: dict[str, dict[str, str]]) -> Any:
    """``node`` with every ``$ref`` to a renamed component pointed at its new name."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                kind, _, name = value[len(_REF_PREFIX) :].partition("/")
                new = renames.get(kind, {}).get(name)
                out[key] = f"{_REF_PREFIX}{kind}/{new}" if new else value
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def merge_documents(docs: dict[str, dict[str, Any]], missing: list[str]) -> dict[str, Any]:
    """Merge the services' documents (``service name → document``)."""
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {}
    tags: dict[str, dict[str, Any]] = {}
    for service, doc in docs.items():
        their_components: dict[str, dict[str, Any]] = doc.get("components") or {}
        renames: dict[str, dict[str, str]] = {}
        for kind, items in their_components.items():
            if not isinstance(items, dict):
                continue
            ours = components.setdefault(kind, {})
            for name, value in items.items():
                if name in ours and ours[name] != value:
                    # same name, different shape: the later one gets a service prefix
                    renames.setdefault(kind, {})[name] = f"{service}__{name}"
        for kind, items in their_components.items():
            if not isinstance(items, dict):
                continue
            ours = components.setdefault(kind, {})
            for name, value in items.items():
                new_name = renames.get(kind, {}).get(name, name)
                ours[new_name] = _rewrite_refs(copy.deepcopy(value), renames)
        for path, item in (doc.get("paths") or {}).items():
            if not path.startswith("/api/"):
                continue
            item = _rewrite_refs(copy.deepcopy(item), renames)
            for method in _METHODS:
                operation = item.get(method)
                if isinstance(operation, dict) and not operation.get("tags"):
                    operation["tags"] = [service]
            if path in paths:
                log.warning("openapi_path_clash", path=path, service=service)
                paths[path] = {**paths[path], **item}
            else:
                paths[path] = item
        for tag in doc.get("tags") or []:
            if isinstance(tag, dict) and "name" in tag:
                tags.setdefault(tag["name"], tag)
    components.setdefault("securitySchemes", {}).setdefault(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    description = "Every public route of Clarin, served through the gateway."
    if missing:
        description += " Not included right now (service unavailable): " + ", ".join(missing)
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Clarin API", "version": "1", "description": description},
        "paths": dict(sorted(paths.items())),
        "components": components,
        "security": [{"bearer": []}],
    }
    if tags:
        merged["tags"] = list(tags.values())
    if missing:
        merged["x-unavailable-services"] = missing
    return merged


class OpenApiCache:
    def __init__(
        self, client: httpx.AsyncClient, upstreams: dict[str, str], ttl: float, timeout: float
    ) -> None:
        self.client = client
        self.upstreams = upstreams
        self.ttl = ttl
        self.timeout = timeout
        self._doc: dict[str, Any] | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self, service: str, base: str) -> dict[str, Any] | None:
        try:
            resp = await self.client.get(f"{base}/openapi.json", timeout=self.timeout)
            resp.raise_for_status()
            doc = resp.json()
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc
        except Exception as exc:
            log.warning("openapi_fetch_failed", service=service, error=repr(exc))
            return None

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._doc is not None and time.monotonic() < self._expires:
                return self._doc
            names = list(self.upstreams)
            fetched = await asyncio.gather(*(self._fetch(n, self.upstreams[n]) for n in names))
            docs = {n: d for n, d in zip(names, fetched, strict=True) if d is not None}
            missing = [n for n, d in zip(names, fetched, strict=True) if d is None]
            self._doc = merge_documents(docs, missing)
            # a partial document is retried soon, a complete one kept for the TTL
            self._expires = time.monotonic() + (min(self.ttl, 5.0) if missing else self.ttl)
            return self._doc


def docs_page(doc: dict[str, Any], openapi_url: str) -> str:
    """A self-contained HTML listing of the operations (no CDN needed)."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method.upper(), path, op))
    esc = html.escape
    sections: list[str] = []
    for tag in sorted(by_tag):
        rows = []
        for method, path, op in by_tag[tag]:
            body = ""
            content = (op.get("requestBody") or {}).get("content") or {}
            for media_type, media in content.items():
                ref = (media.get("schema") or {}).get("$ref", "")
                body += f"{esc(media_type)} {esc(ref.rsplit('/', 1)[-1])} "
            codes = ", ".join(esc(str(c)) for c in (op.get("responses") or {}))
            summary = op.get("summary") or op.get("operationId") or ""
            rows.append(
                f"<tr><td class=m>{esc(method)}</td><td><code>{esc(path)}</code></td>"
                f"<td>{esc(summary)}</td><td>{body}</td><td>{codes}</td></tr>"
            )
        sections.append(
            f"<h2>{esc(tag)}</h2><table><tr><th>method</th><th>path</th><th>summary</th>"
            f"<th>body</th><th>responses</th></tr>{''.join(rows)}</table>"
        )
    unavailable = doc.get("x-unavailable-services") or []
    note = (
        f"<p class=warn>Unavailable right now: {esc(', '.join(unavailable))}</p>"
        if unavailable
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Clarin API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
        "padding:.3rem .5rem;text-align:left;vertical-align:top}.m{font-weight:bold}"
        ".warn{color:#a40}</style></head><body><h1>Clarin API</h1>"
        f'<p>OpenAPI document: <a href="{esc(openapi_url)}">{esc(openapi_url)}</a>. '
        "Authenticate with <code>Authorization: Bearer &lt;access token&gt;</code> "
        "from <code>POST /api/auth/login</code>.</p>"
        f"{note}{''.join(sections)}</body></html>"
    )
