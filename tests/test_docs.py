"""The repository's documents say what the code does.

* docs/API.md's REST tables and the gateway's merged OpenAPI document name the
  same routes, both ways, and its WebSocket tables every frame type there is;
* no tracked file points outside the repository (a sibling folder, a path of
  someone's machine), and every Markdown document it names exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from clarin_campaigns.main import create_app as create_campaigns
from fastapi import FastAPI
from starlette.routing import Route

from clarin_auth.main import create_app as create_auth
from clarin_common.events import AppType
from clarin_devices.main import create_app as create_devices
from clarin_gateway.main import create_app as create_gateway
from clarin_gateway.openapi import OpenApiCache
from clarin_leads.main import create_app as create_leads
from clarin_messaging.main import create_app as create_messaging
from clarin_webhooks.main import create_app as create_webhooks

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "API.md"
REST_HEADER = ("method", "path", "body", "answer")
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}

Route_ = tuple[str, str]  # (METHOD, path with every {parameter} written {})


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def documented_routes(text: str) -> list[Route_]:
    """Rows of every ``| method | path | body | answer |`` table, in order."""
    routes: list[Route_] = []
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if tuple(cells) == REST_HEADER:
            in_table = True
            continue
        if not in_table or not cells or set(line.replace("|", "").strip()) <= {"-", " "}:
            in_table = in_table and bool(cells)
            continue
        method, path = cells[0], cells[1]
        assert method in METHODS, f"docs/API.md:{number}: {method!r} is not an HTTP method"
        assert re.fullmatch(r"/[A-Za-z0-9_./{}-]*", path), (
            f"docs/API.md:{number}: one exact path per row, like /api/chats/{{id}}; got {path!r}"
        )
        routes.append((method, _normalise(path)))
    return routes


def _service_apps() -> dict[str, FastAPI]:
    return {
        "auth": create_auth(),
        "devices": create_devices(),
        "messaging": create_messaging(),
        "leads": create_leads(),
        "webhooks": create_webhooks(),
        "campaigns": create_campaigns(),
    }


async def merged_openapi() -> dict[str, Any]:
    """The gateway's merged document, built by the gateway's own code from the
    services' apps (in-process: nothing listens, nothing connects)."""
    apps = _service_apps()
    mounts = {f"http://{name}": httpx.ASGITransport(app=app) for name, app in apps.items()}
    async with httpx.AsyncClient(mounts=mounts) as client:
        cache = OpenApiCache(client, {n: f"http://{n}" for n in apps}, ttl=0, timeout=10)
        doc = await cache.document()
    assert "x-unavailable-services" not in doc, doc.get("x-unavailable-services")
    return doc


def openapi_routes(doc: dict[str, Any]) -> set[Route_]:
    return {
        (method.upper(), _normalise(path))
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def _walk(routes: list[Any], prefix: str = "") -> set[Route_]:
    out: set[Route_] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's lazily included router
        if included is not None:
            context = getattr(route, "include_context", None)
            out |= _walk(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route) and ":path}" not in route.path:  # not the forwarder
            out |= {
                (m, _normalise(prefix + route.path)) for m in route.methods or () if m in METHODS
            }
    return out


def gateway_routes() -> set[Route_]:
    """The gateway's own public /api routes (not forwarded, so not in the merged document)."""
    routes = _walk(create_gateway().routes)
    assert ("GET", "/api/openapi.json") in routes, "the gateway's routes were not found"
    return {(m, p) for m, p in routes if p.startswith("/api/")}


def compare(documented: list[Route_], served: set[Route_]) -> list[str]:
    problems = [
        f"documented but not served: {m} {p}" for m, p in documented if (m, p) not in served
    ]
    problems += [f"served but not documented: {m} {p}" for m, p in sorted(served - set(documented))]
    duplicates = {r for r in documented if documented.count(r) > 1}
    problems += [f"documented twice: {m} {p}" for m, p in sorted(duplicates)]
    return problems


@pytest.fixture(scope="module")
async def served() -> set[Route_]:
    doc = await merged_openapi()
    return openapi_routes(doc) | gateway_routes()


def test_api_doc_and_openapi_name_the_same_routes(served: set[Route_]) -> None:
    documented = documented_routes(API_DOC.read_text())
    assert len(documented) >= 30, "the REST tables of docs/API.md were not found"
    problems = compare(documented, served)
    assert not problems, "docs/API.md and the merged OpenAPI disagree:\n" + "\n".join(problems)


def test_the_check_catches_drift_both_ways(served: set[Route_]) -> None:
    text = API_DOC.read_text()
    row = next(
        line for line in text.splitlines() if line.startswith("| DELETE | /api/leads/{id} |")
    )
    missing = documented_routes(text.replace(row + "\n", ""))
    assert compare(missing, served) == ["served but not documented: DELETE /api/leads/{}"]
    extra = documented_routes(
        text.replace(row, row + "\n| GET | /api/leads/{id}/history | - | 200 |")
    )
    assert compare(extra, served) == ["documented but not served: GET /api/leads/{}/history"]
    with pytest.raises(AssertionError, match="one exact path per row"):
        documented_routes(text.replace(row, "| DELETE | /api/leads/{id}, /api/x | - | 204 |"))


def documented_frame_types(text: str) -> set[str]:
    """The backticked names in the first column of every ``| type | data |`` table."""
    types: set[str] = set()
    in_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if tuple(cells) == ("type", "data"):
            in_table = True
        elif in_table and cells:
            types |= set(re.findall(r"`([a-z_]+)`", cells[0]))
        else:
            in_table = False
    return types


def test_api_doc_names_every_websocket_frame_type() -> None:
    served = set(get_args(AppType))
    documented = documented_frame_types(API_DOC.read_text())
    assert documented == served, (
        f"WebSocket frame types: documented only {sorted(documented - served)}, "
        f"sent but not documented {sorted(served - documented)}"
    )


# --------------------------------------------------------------------------- references

# assembled, so that this file does not match itself
_OUTSIDE = [
    re.compile(r"\.\./" + "shared"),
    re.compile(r"(?<![\w.])" + "shared/" + r"[A-Z]+\.md"),
    re.compile(r"(?<![\w.$-])/" + "work/"),
    re.compile(r"(?<![\w.$-])/" + r"home/[a-z_][\w-]*/"),
    re.compile(r"(?<![\w.$-])/" + r"Users/\w+/"),
]
_MD_MENTION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    paths = [ROOT / p for p in out.decode().split("\0") if p]
    return [p for p in paths if p.is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", errors="replace")


def test_no_file_points_outside_the_repository() -> None:
    found: list[str] = []
    for path in tracked_files():
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in _OUTSIDE:
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_every_markdown_document_named_exists() -> None:
    files = tracked_files()
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)
    missing: list[str] = []
    for path in files:
        text = _text(path)
        if text is None or path.name in ("uv.lock", "package-lock.json"):
            continue
        for name in set(_MD_MENTION.findall(text)):
            if "/" in name:
                ok = (ROOT / name).is_file() or (path.parent / name).is_file()
            else:
                ok = name in by_name
            if not ok:
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert not missing, "documents that do not exist:\n" + "\n".join(sorted(missing))


def test_the_reference_checks_see_a_bad_reference() -> None:
    api, neonize = "API" + ".md", "NEONIZE" + ".md"
    bad = "see ../" + f"shared/{api} and /" + f"work/shared/{neonize}"
    assert sum(bool(p.search(bad)) for p in _OUTSIDE) == 3
    assert "/root/.cache/uv" not in [m for p in _OUTSIDE for m in p.findall("/root/.cache/uv")]
    assert _MD_MENTION.findall("read `docs/API.md` and README.md.") == ["docs/API.md", "README.md"]
