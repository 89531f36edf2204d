"""Test helpers other services reuse (the fixtures live in :mod:`.plugin`)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar, overload

import httpx
import uvicorn
from fastapi import FastAPI

from clarin_common.auth import issue_access_token
from clarin_common.logging import configure_logging
from clarin_common.settings import DEV_JWT_PRIVATE_KEY
from clarin_devkit.devservers import free_ports

T = TypeVar("T")


def make_token(
    account_id: str | None = None,
    user_id: str | None = None,
    role: str = "admin",
    ttl: timedelta = timedelta(minutes=15),
) -> str:
    """An access token signed with the dev key, as auth would issue it."""
    token, _ = issue_access_token(
        DEV_JWT_PRIVATE_KEY,
        user_id=user_id or str(uuid.uuid4()),
        account_id=account_id or str(uuid.uuid4()),
        role=role,
        ttl=ttl,
    )
    return token


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def running_app(
    app: FastAPI, base_url: str = "http://test"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an httpx client speaking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def free_port() -> int:
    return free_ports(1)[0]


@contextlib.asynccontextmanager
async def live_server(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve the app with uvicorn on 127.0.0.1 (for WebSockets and proxies)."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ws_ping_interval=None,
        # as in production (clarin_common.app.serve): the gateway decides whom to believe
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    else:
        raise RuntimeError("server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.05
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05
) -> T: ...


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05
) -> Any:
    """Poll an (async or sync) predicate until it returns a truthy value; that value.

    mypy types the answer for a sync predicate; for an async one it says ``Any``
    (a coroutine's type carries ``Any``, which makes the two overloads ambiguous):
    annotate the variable that receives it.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class LogRecords(logging.Handler):
    """Every structlog event logged through the standard library, as its dict."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[int, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self.events.append((record.levelno, dict(record.msg)))

    def named(self, event: str, component: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        return [
            (level, e)
            for level, e in self.events
            if e.get("event") == event and (component is None or e.get("component") == component)
        ]


@contextlib.contextmanager
def capture_log_events() -> Iterator[LogRecords]:
    """The structlog events logged (INFO and above) while inside."""
    configure_logging("INFO", json=False, service="test")
    handler = LogRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
