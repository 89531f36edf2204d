"""Typed helpers of the devices tests: an API client of one account and the log
of every event seen on NATS."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from clarin_devkit.testing import auth_headers, eventually, make_token

T = TypeVar("T")


@dataclass
class Seen:
    subject: str
    data: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class EventLog:
    """Every wa.evt.* and app.* message seen on NATS, in order."""

    items: list[Seen] = field(default_factory=list)

    def of(self, subject_suffix: str, device_id: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.items
            if s.subject.endswith(subject_suffix)
            and (device_id is None or s.data.get("device_id") == device_id)
        ]

    def statuses(self, device_id: str) -> list[str]:
        return [s.data["data"]["status"] for s in self.of(".status", device_id)]

    def app_statuses(self, device_id: str) -> list[str]:
        return [s.data["data"]["device"]["status"] for s in self.of(".device_status", device_id)]

    async def wait(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Until ``predicate`` (over the events seen so far) is truthy; its value."""
        return await eventually(predicate, timeout=timeout, interval=0.02)


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.account_id = str(uuid.uuid4())
        self.token = make_token(account_id=self.account_id)
        self.headers = auth_headers(self.token)

    async def create(self, name: str = "Sales line") -> dict[str, Any]:
        resp = await self.client.post("/api/devices", json={"name": name}, headers=self.headers)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def get(self, device_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/devices/{device_id}", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def post(self, device_id: str, action: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/devices/{device_id}/{action}", headers=self.headers, **kwargs
        )

    async def wait_status(
        self, device_id: str, status: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The device once the API shows it in ``status``."""
        seen: list[str] = []

        async def reached() -> dict[str, Any] | None:
            device = await self.get(device_id)
            seen.append(device["status"])
            return device if device["status"] == status else None

        try:
            device: dict[str, Any] | None = await eventually(
                reached, timeout=timeout, interval=0.03
            )
        except AssertionError:
            raise AssertionError(f"device {device_id} is {seen[-1]}, not {status}") from None
        assert device is not None
        return device


class Refusing:
    """A local port bound and never listened on: a dial through it is refused at
    once (what an offline machine's failed DNS lookup did, but the same with
    Internet)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # held, never listening: connects get RST
        self.port = self.sock.getsockname()[1]
        self.proxy = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
