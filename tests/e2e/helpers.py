from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from clarin_common.events import sim_subject
from clarin_common.nats import connect, request_json


async def register(client: httpx.AsyncClient, name: str = "Ana Pérez") -> dict[str, Any]:
    email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    resp = await client.post(
        "/api/auth/register",
        json={
            "account_name": "Tienda Ñandú 🛍️",
            "name": name,
            "email": email,
            "password": "correct horse battery",
        },
    )
    assert resp.status_code == 201, resp.text
    session: dict[str, Any] = resp.json()
    session["email"] = email
    return session


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['access_token']}"}


class Socket:
    """A WebSocket client that collects frames in the background."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/ws?token={token}"
        self.frames: list[dict[str, Any]] = []
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._new = asyncio.Event()

    async def __aenter__(self) -> Socket:
        self._ws = await websockets.connect(self.url)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        if self._ws is not None:
            await self._ws.close()

    @property
    def connection(self) -> ClientConnection:
        """The open WebSocket (inside ``async with``): to send on it, or see how it closed."""
        assert self._ws is not None, "not connected"
        return self._ws

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            self.frames.append(json.loads(raw))
            self._new.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                types = [f.get("type") for f in self.frames]
                raise AssertionError(f"no matching frame within {timeout}s; got {types}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass


async def sim(
    nats_url: str, device_id: str, action: str, payload: dict[str, Any]
) -> dict[str, Any]:
    nc = await connect(nats_url, name="e2e-sim")
    try:
        for _ in range(50):  # the worker subscribes a moment after the device connects
            try:
                return await request_json(nc, sim_subject(device_id, action), payload, 5)
            except Exception as exc:  # no responders yet
                last = exc
                await asyncio.sleep(0.2)
        raise AssertionError(f"simulator did not answer {action}: {last}")
    finally:
        await nc.close()


async def linked_device(
    client: httpx.AsyncClient, session: dict[str, Any], nats_url: str, phone: str
) -> dict[str, Any]:
    resp = await client.post("/api/devices", json={"name": "Ventas"}, headers=bearer(session))
    assert resp.status_code == 201, resp.text
    device: dict[str, Any] = resp.json()
    resp = await client.post(f"/api/devices/{device['id']}/connect", headers=bearer(session))
    assert resp.status_code == 202, resp.text
    for _ in range(100):
        qr = await client.get(f"/api/devices/{device['id']}/qr", headers=bearer(session))
        if qr.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert qr.status_code == 200, qr.text
    reply = await sim(nats_url, device["id"], "scan", {"phone": phone})
    assert reply == {"ok": True}, reply
    for _ in range(100):
        got = (await client.get(f"/api/devices/{device['id']}", headers=bearer(session))).json()
        if got["status"] == "connected":
            return got  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"device never connected: {got}")
