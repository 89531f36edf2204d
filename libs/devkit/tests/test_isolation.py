"""`make test` beside a running `make run` changes nothing of the running system.

A stand-in for the running system (its own NATS with streams, a durable consumer,
a KV bucket and stored events; its own Redis with a key; a database with a row)
is reached by every setting a developer's shell or `.env` would give a test run:
CLARIN_NATS_URL, CLARIN_REDIS_URL, CLARIN_DATABASE_URL and a `.env` beside it.
A real pytest run with this plugin then runs tests that write to NATS and clean
state in between (deleting every consumer, bucket and stream message it sees).
The running system keeps all of it. Only a run told so on purpose
(CLARIN_TEST_NATS_URL) works on a server it did not start, and then it does
wipe it: the check below sees that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from nats.js.api import ConsumerConfig

from clarin_common import nats as natsmod
from clarin_common.db import ensure_database_sync, with_database
from clarin_common.events import WA_EVENTS_STREAM
from clarin_common.settings import ENV_FILE_VARIABLE
from clarin_devkit.devservers import ServerUrls, ephemeral_servers
from clarin_devkit.testing.plugin import TestServers

DURABLE = "messaging"
BUCKET = "device_leases"
STORED_EVENTS = 5

# what a test run does to the servers it is given
NESTED_TESTS = textwrap.dedent(
    """
    from nats.js.api import ConsumerConfig

    from clarin_common.nats import ensure_kv


    async def test_writes_everywhere(clean_state, nats_client):
        js = nats_client.jetstream()
        await js.add_consumer("WA_EVENTS", ConsumerConfig(durable_name="messaging"))
        kv = await ensure_kv(js, "device_leases")
        await kv.put("device-1", b"a test's lease")
        await js.publish("wa.evt.acct.dev.message", b"{}")


    async def test_starts_clean(clean_state, nats_client):
        js = nats_client.jetstream()
        assert await js.consumers_info("WA_EVENTS") == []
        assert not [s for s in await js.streams_info() if s.config.name.startswith("KV_")]
        assert (await js.stream_info("WA_EVENTS")).state.messages == 0
    """
)


@dataclass(frozen=True)
class Running:
    """The stand-in for a running `make run`."""

    nats_url: str
    redis_url: str
    database_url: str


@pytest.fixture
def running_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUrls]:
    with ephemeral_servers(tmp_path_factory.mktemp("running"), kinds=("nats", "redis")) as urls:
        yield urls


@pytest.fixture
async def running(running_servers: ServerUrls, test_servers: TestServers) -> AsyncIterator[Running]:
    database_url = with_database(
        test_servers.admin_database_url, f"clarin_running_{uuid.uuid4().hex[:8]}"
    )
    ensure_database_sync(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE SCHEMA leads; CREATE TABLE leads.leads (name text)")
        await conn.execute("INSERT INTO leads.leads VALUES ('Ana')")
    finally:
        await conn.close()

    nc = await natsmod.connect(running_servers.nats_url, name="running-system")
    try:
        js = nc.jetstream()
        await natsmod.ensure_streams(js)
        await js.add_consumer(WA_EVENTS_STREAM, ConsumerConfig(durable_name=DURABLE))
        kv = await natsmod.ensure_kv(js, BUCKET)
        await kv.put("device-1", b"worker-1")
        for i in range(STORED_EVENTS):
            await js.publish(f"wa.evt.acct.dev{i}.message", b"{}")
    finally:
        await nc.close()
    client = aioredis.from_url(running_servers.redis_url)
    try:
        await client.set("LIMITS:login/ip/127.0.0.1", "3")
    finally:
        await client.aclose()

    yield Running(running_servers.nats_url, running_servers.redis_url, database_url)

    admin = await asyncpg.connect(test_servers.admin_database_url)
    try:
        name = database_url.rsplit("/", 1)[1]
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def run_tests_beside(
    running: Running, test_servers: TestServers, workdir: Path, **extra: str
) -> str:
    """A pytest run with the plugin, from a folder whose `.env` and whose
    environment point at the running system, as a developer's would."""
    (workdir / "test_nested.py").write_text(NESTED_TESTS)
    (workdir / ".env").write_text(
        f"CLARIN_NATS_URL={running.nats_url}\n"
        f"CLARIN_REDIS_URL={running.redis_url}\n"
        f"CLARIN_DATABASE_URL={running.database_url}\n"
    )
    # a developer's shell: none of this run's own test settings
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLARIN_TEST_") and k != ENV_FILE_VARIABLE
    }
    env |= {
        "CLARIN_NATS_URL": running.nats_url,
        "CLARIN_REDIS_URL": running.redis_url,
        "CLARIN_DATABASE_URL": running.database_url,
        # PostgreSQL: the same server (a test run makes a database of its own on it)
        "CLARIN_TEST_DATABASE_URL": test_servers.admin_database_url,
        **extra,
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "clarin_devkit.testing.plugin",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=session",
            "-o",
            "asyncio_default_test_loop_scope=session",
            "test_nested.py",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "2 passed" in output, output
    return output


async def what_runs(running: Running) -> dict[str, object]:
    nc = await natsmod.connect(running.nats_url, name="running-system-check")
    try:
        js = nc.jetstream()
        consumers = sorted(c.name for c in await js.consumers_info(WA_EVENTS_STREAM))
        buckets = sorted(
            (s.config.name or "")[3:]
            for s in await js.streams_info()
            if (s.config.name or "").startswith("KV_")
        )
        lease = (await (await js.key_value(BUCKET)).get("device-1")).value if buckets else None
        events = (await js.stream_info(WA_EVENTS_STREAM)).state.messages
    finally:
        await nc.close()
    client = aioredis.from_url(running.redis_url)
    try:
        limit = await client.get("LIMITS:login/ip/127.0.0.1")
    finally:
        await client.aclose()
    conn = await asyncpg.connect(running.database_url)
    try:
        leads = [r["name"] for r in await conn.fetch("SELECT name FROM leads.leads")]
    finally:
        await conn.close()
    return {
        "consumers": consumers,
        "buckets": buckets,
        "lease": lease,
        "events": events,
        "redis": limit,
        "leads": leads,
    }


BEFORE = {
    "consumers": [DURABLE],
    "buckets": [BUCKET],
    "lease": b"worker-1",
    "events": STORED_EVENTS,
    "redis": b"3",
    "leads": ["Ana"],
}


async def test_a_test_run_beside_a_running_system_changes_nothing_of_it(
    running: Running, test_servers: TestServers, tmp_path: Path
) -> None:
    assert await what_runs(running) == BEFORE
    run_tests_beside(running, test_servers, tmp_path)
    assert await what_runs(running) == BEFORE


async def test_only_a_run_told_to_use_a_nats_works_on_it(
    running: Running, test_servers: TestServers, tmp_path: Path
) -> None:
    # the same run, told on purpose to use that NATS: its clean-up reaches it
    run_tests_beside(running, test_servers, tmp_path, CLARIN_TEST_NATS_URL=running.nats_url)
    after = await what_runs(running)
    assert after["consumers"] == [] and after["buckets"] == [] and after["events"] == 0
    # what it was not told to use stays untouched
    assert (after["redis"], after["leads"]) == (b"3", ["Ana"])
