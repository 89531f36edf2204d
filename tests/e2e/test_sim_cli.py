"""`scripts/sim.py`, the README's way to play a phone without the `nats` CLI, drives
the running system's simulator: the fixed actions and any action with --json."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarin_devkit.testing import eventually

from .helpers import bearer, linked_device, register
from .system import System

SIM = Path(__file__).resolve().parents[2] / "scripts" / "sim.py"


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def sim_cli(system: System, *args: str) -> tuple[int, dict[str, Any] | str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SIM), *args, "--nats", system.nats_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        return proc.returncode, err.decode()


async def test_the_sim_script_plays_the_phone(system: System, client: httpx.AsyncClient) -> None:
    session = await register(client)
    device = await linked_device(client, session, system.nats_url, "34600555666")
    # an action of its own, and one given as JSON
    assert await sim_cli(system, "inbound", device["id"], "5215598765432", "Hola 👋", "Ana") == (
        0,
        {"ok": True},
    )
    payload = json.dumps({"from": "5215598765432", "body": "De viaje"})
    assert await sim_cli(system, "status_post", device["id"], "--json", payload) == (
        0,
        {"ok": True},
    )

    async def one_chat_from_ana() -> bool:
        chats = (await client.get("/api/chats", headers=bearer(session))).json()["items"]
        return [c["last_message_preview"] for c in chats] == ["Hola 👋"]

    await eventually(one_chat_from_ana)
    # an action that needs a payload, without one: a clear error, nothing sent
    code, said = await sim_cli(system, "typing", device["id"])
    assert code == 2 and "--json" in str(said)
    code, said = await sim_cli(system, "typing", device["id"], "--json", "[1]")
    assert code != 0 and "JSON object" in str(said)
