"""pytest fixtures shared by every service (loaded with ``-p clarin_devkit.testing.plugin``).

A test run owns what it touches, so that ``make test`` beside a running
``make run`` changes nothing of it:

- PostgreSQL: ``CLARIN_TEST_DATABASE_URL`` names a server (the machine's own is
  fine); the run creates a fresh database there and drops it afterwards.
- NATS and Redis: a private server per run (``clean_state`` deletes every
  stream, consumer and KV bucket, so the run never shares them), unless
  ``CLARIN_TEST_NATS_URL`` / ``CLARIN_TEST_REDIS_URL`` name one on purpose.
  ``CLARIN_NATS_URL``/``CLARIN_REDIS_URL`` (the environment, a ``.env``) are
  never used for them: ``libs/devkit/tests/test_isolation.py`` shows it.
- Settings: no ``.env`` is read during a run (``CLARIN_ENV_FILE`` is set empty
  for the whole session, so the processes tests start inherit it): a ``.env``
  that ``make run`` wrote changes nothing of the tests.

A server not named (or named ``embedded``) comes from testcontainers when a
Docker engine answers, else from the embedded servers of the project's
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from clarin_common import nats as natsmod
from clarin_common.auth_events import AUTH_EVENTS_STREAM
from clarin_common.db import ensure_database_sync, with_database
from clarin_common.events import APP_EVENTS_STREAM, WA_EVENTS_STREAM, WA_OUTBOX_STREAM
from clarin_common.settings import DEV_JWT_PRIVATE_KEY, DEV_JWT_PUBLIC_KEY, ENV_FILE_VARIABLE


def pytest_configure(config: pytest.Config) -> None:
    # before any test builds a settings object
    os.environ[ENV_FILE_VARIABLE] = ""


@dataclass(frozen=True)
class TestServers:
    __test__ = False
    database_url: str  # the fresh database of this run
    admin_database_url: str  # the server's maintenance database
    redis_url: str
    nats_url: str


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _containers(kinds: set[str]) -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if "postgres" in kinds:
            from testcontainers.postgres import PostgresContainer

            pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            urls["postgres"] = pg.get_connection_url()
        if "redis" in kinds:
            from testcontainers.redis import RedisContainer

            rc = stack.enter_context(RedisContainer("redis:7-alpine"))
            urls["redis"] = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        if "nats" in kinds:
            from testcontainers.nats import NatsContainer

            nc = stack.enter_context(NatsContainer("nats:2.10", jetstream=True))
            urls["nats"] = nc.nats_uri()
        yield urls


@contextlib.contextmanager
def _servers() -> Iterator[dict[str, str]]:
    env = {
        "postgres": os.environ.get("CLARIN_TEST_DATABASE_URL", ""),
        "redis": os.environ.get("CLARIN_TEST_REDIS_URL", ""),
        "nats": os.environ.get("CLARIN_TEST_NATS_URL", ""),
    }
    missing = {k for k, v in env.items() if not v or v == "embedded"}
    urls = {k: v for k, v in env.items() if k not in missing}
    with contextlib.ExitStack() as stack:
        if missing and not all(env[k] == "embedded" for k in missing) and _docker_answers():
            urls.update(stack.enter_context(_containers(missing)))
            missing = set()
        if missing:
            from clarin_devkit.devservers import ephemeral_servers

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clarin-test-")))
            servers = stack.enter_context(ephemeral_servers(tmp, kinds=missing))
            embedded = {
                "postgres": servers.database_url,
                "redis": servers.redis_url,
                "nats": servers.nats_url,
            }
            urls.update({k: embedded[k] for k in missing})
        yield urls


@pytest.fixture(scope="session")
def test_servers() -> Iterator[TestServers]:
    import psycopg

    with _servers() as urls:
        admin_url = with_database(urls["postgres"], "postgres")
        name = f"clarin_test_{uuid.uuid4().hex[:10]}"
        ensure_database_sync(with_database(urls["postgres"], name))
        servers = TestServers(
            database_url=with_database(urls["postgres"], name),
            admin_database_url=admin_url,
            redis_url=urls["redis"],
            nats_url=urls["nats"],
        )
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.update(
            {
                "CLARIN_ENV": "test",
                "CLARIN_DATABASE_URL": servers.database_url,
                "CLARIN_REDIS_URL": servers.redis_url,
                "CLARIN_NATS_URL": servers.nats_url,
                "CLARIN_LOG_JSON": "false",
                # tests sign with the dev key, whatever a local `.env` holds
                "CLARIN_JWT_PUBLIC_KEY": DEV_JWT_PUBLIC_KEY,
                "AUTH_JWT_PRIVATE_KEY": DEV_JWT_PRIVATE_KEY,
            }
        )
        try:
            yield servers
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_ENV_KEYS = (
    "CLARIN_ENV",
    "CLARIN_DATABASE_URL",
    "CLARIN_REDIS_URL",
    "CLARIN_NATS_URL",
    "CLARIN_LOG_JSON",
)


@pytest.fixture(scope="session")
async def nats_client(test_servers: TestServers) -> AsyncIterator[NatsClient]:
    nc = await natsmod.connect(test_servers.nats_url, name="clarin-tests")
    await natsmod.ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


async def _truncate_all(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT schemaname, tablename FROM pg_tables
            WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'public')
              AND tablename NOT LIKE '\\_yoyo%' AND tablename <> 'yoyo_lock'
              AND tablename NOT LIKE 'whatsmeow%'
            """
        )
        keep = os.environ.get("CLARIN_TEST_KEEP_TABLES", "").split(",")
        names = [
            f'"{r["schemaname"]}"."{r["tablename"]}"'
            for r in rows
            if f"{r['schemaname']}.{r['tablename']}" not in keep
        ]
        if names:
            await conn.execute(f"TRUNCATE {', '.join(names)} CASCADE")
    finally:
        await conn.close()


async def reset_nats(nc: NatsClient) -> None:
    js = nc.jetstream()
    await natsmod.ensure_streams(js)
    for stream in (WA_EVENTS_STREAM, APP_EVENTS_STREAM, AUTH_EVENTS_STREAM, WA_OUTBOX_STREAM):
        for consumer in await js.consumers_info(stream):
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, consumer.name)
        await js.purge_stream(stream)
    for bucket in await _kv_buckets(nc):
        with contextlib.suppress(Exception):
            await js.delete_key_value(bucket)


async def _kv_buckets(nc: NatsClient) -> list[str]:
    js = nc.jetstream()
    names: list[str] = []
    for info in await js.streams_info():
        name = info.config.name or ""
        if name.startswith("KV_"):
            names.append(name[3:])
    return names


@pytest.fixture
async def clean_state(test_servers: TestServers, nats_client: NatsClient) -> None:
    """Empty every table, stream, consumer, KV bucket and the Redis database."""
    from clarin_common.redis import create_redis

    await _truncate_all(test_servers.database_url)
    await reset_nats(nats_client)
    redis = create_redis(test_servers.redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
    await asyncio.sleep(0)
