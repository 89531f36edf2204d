"""A local webhook receiver for the tests: records every POST, answers as told.

Used by the webhooks service tests, the end-to-end tests and the browser journey.
It checks nothing itself; :func:`verified` is what a real receiver does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from clarin_devkit.testing import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def delivery_id(self) -> str:
        return self.headers.get("x-clarin-delivery", "")

    @property
    def event_type(self) -> str:
        return self.headers.get("x-clarin-event", "")

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def verified(received: Received, secret: str) -> bool:
    """Does the signature check out with ``secret``? Written from the contract
    alone (hex HMAC-SHA256 of "{timestamp}.{body}"), as another team would."""
    timestamp = received.headers.get("x-clarin-timestamp", "")
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256)
    return hmac.compare_digest(
        "sha256=" + mac.hexdigest(), received.headers.get("x-clarin-signature", "")
    )


@dataclass
class Receiver:
    """An ASGI app. ``plan`` holds the statuses of the next answers (then 200);
    ``delay`` holds each answer back that many seconds."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    plan: list[int] = field(default_factory=list)
    delay: float = 0.0
    # requests being answered right now, and the most there ever were at once
    in_progress: int = 0
    max_in_progress: int = 0

    def reset(self) -> None:
        self.requests.clear()
        self.plan.clear()
        self.delay = 0.0
        self.max_in_progress = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.in_progress += 1
        self.max_in_progress = max(self.max_in_progress, self.in_progress)
        try:
            await self._answer(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.plan.pop(0) if self.plan else 200
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body, status))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"no"})

    def accepted(self, predicate: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        """The requests answered with a 2xx that match ``predicate``."""
        return [r for r in self.requests if 200 <= r.status < 300 and predicate(r)]

    async def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                got = [(r.event_type, r.status) for r in self.requests]
                raise AssertionError(f"receiver condition not met within {timeout}s; got {got}")
            await asyncio.sleep(0.02)


def _server(app: Receiver, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False
    )
    return uvicorn.Server(config)


@contextlib.asynccontextmanager
async def serving(receiver: Receiver, port: int | None = None) -> AsyncIterator[Receiver]:
    """Serve ``receiver`` on 127.0.0.1 (in this event loop) while the block runs."""
    port = port or free_port()
    server = _server(receiver, port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.contextmanager
def serving_in_thread(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` from a thread of its own (for synchronous tests)."""
    port = free_port()
    server = _server(receiver, port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("receiver did not start")
        time.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(15)
