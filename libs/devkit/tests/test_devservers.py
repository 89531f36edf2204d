"""clarin_devkit.devservers against real embedded processes (no mocks).

Ports are always free random ones: the machine may run real servers on the
default ports.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nats
import psycopg
import pytest
import redis

from clarin_common.net import tcp_answers, url_answers
from clarin_devkit.devservers import (
    ServerUrls,
    ensure_servers,
    ephemeral_servers,
    find_binary,
    free_ports,
    stop_all,
)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUrls]:
    with ephemeral_servers(tmp_path_factory.mktemp("ephemeral")) as urls:
        yield urls


def _redis_ping(url: str) -> bytes:
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


async def _nats_roundtrip(url: str) -> None:
    nc = await asyncio.wait_for(
        nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0),
        timeout=10,
    )
    try:
        sub = await nc.subscribe("devservers.test")
        await nc.publish("devservers.test", b"hello")
        await asyncio.wait_for(nc.flush(), timeout=5)
        msg = await asyncio.wait_for(sub.next_msg(), timeout=5)
        assert msg.data == b"hello"
        js = nc.jetstream()
        info = await asyncio.wait_for(js.account_info(), timeout=5)
        assert info.limits is not None
        await asyncio.wait_for(js.add_stream(name="DEVSERVERS", subjects=["ds.>"]), timeout=5)
        ack = await asyncio.wait_for(js.publish("ds.one", b"x"), timeout=5)
        assert ack.stream == "DEVSERVERS"
    finally:
        await nc.close()


def test_find_binary() -> None:
    assert (find_binary("postgres") / "pg_ctl").is_file()
    assert find_binary("redis").name == "redis-server"
    assert find_binary("nats").name == "nats-server"


def test_url_answers_parses_urls(servers: ServerUrls) -> None:
    closed = free_ports(1)[0]
    assert url_answers(servers.database_url)
    assert url_answers(servers.database_url.replace("postgresql://", "postgresql+asyncpg://"))
    assert url_answers(servers.redis_url)
    assert url_answers(servers.nats_url)
    assert url_answers(f"nats://127.0.0.1:{closed},{servers.nats_url}")
    assert not url_answers(f"redis://127.0.0.1:{closed}/0")
    assert not tcp_answers("127.0.0.1", closed)


def test_postgres_answers(servers: ServerUrls) -> None:
    with psycopg.connect(servers.database_url, connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        # the server is bound to 127.0.0.1 only
        row = conn.execute("show listen_addresses").fetchone()
        assert row == ("127.0.0.1",)
        encoding = conn.execute("show server_encoding").fetchone()
        assert encoding == ("UTF8",)


def test_redis_answers(servers: ServerUrls) -> None:
    assert _redis_ping(servers.redis_url) == b"+PONG\r\n"
    client = redis.Redis.from_url(servers.redis_url, socket_timeout=5)
    try:
        assert client.set("devservers", "ok")
        assert client.get("devservers") == b"ok"
    finally:
        client.close()


def test_nats_answers_with_jetstream(servers: ServerUrls) -> None:
    asyncio.run(_nats_roundtrip(servers.nats_url))


def test_ensure_servers_keeps_answering_urls(servers: ServerUrls, tmp_path: Path) -> None:
    database_url = servers.database_url.rsplit("/", 1)[0] + "/kept_db"
    started = time.monotonic()
    urls = ensure_servers(tmp_path / "var", database_url, servers.redis_url, servers.nats_url)
    assert time.monotonic() - started < 5
    assert urls == ServerUrls(database_url, servers.redis_url, servers.nats_url)
    # nothing was started there
    assert not any((tmp_path / "var" / k).exists() for k in ("postgres", "redis", "nats"))
    # the database of the URL was created
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        assert conn.execute("select current_database()").fetchone() == ("kept_db",)


def test_ensure_servers_refuses_remote_hosts(tmp_path: Path) -> None:
    closed = free_ports(1)[0]
    with pytest.raises(RuntimeError, match="not local"):
        # 192.0.2.0/24 is TEST-NET-1: nothing answers there
        ensure_servers(
            tmp_path,
            "postgresql://postgres@192.0.2.1:5432/clarin",
            f"redis://127.0.0.1:{closed}/0",
            f"nats://127.0.0.1:{closed}",
        )
    assert not tcp_answers("127.0.0.1", closed)


def test_ephemeral_servers_stop_and_delete(tmp_path: Path) -> None:
    with ephemeral_servers(tmp_path) as urls:
        ports = [_port(u) for u in (urls.database_url, urls.redis_url, urls.nats_url)]
        assert len(set(ports)) == 3
        assert all(tcp_answers("127.0.0.1", p) for p in ports)
        assert len(list(tmp_path.iterdir())) == 1
    assert not any(tcp_answers("127.0.0.1", p) for p in ports)
    assert list(tmp_path.iterdir()) == []


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarin_devkit.devservers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_cli_up_down(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env_file = var / "servers.env"
    pg_port, redis_port, nats_port = free_ports(3)
    env = {
        **os.environ,
        "CLARIN_DATABASE_URL": f"postgresql://postgres@localhost:{pg_port}/clarin_cli",
        "CLARIN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/2",
        "CLARIN_NATS_URL": f"nats://127.0.0.1:{nats_port}",
    }
    expected = (
        f"CLARIN_DATABASE_URL=postgresql://postgres@127.0.0.1:{pg_port}/clarin_cli\n"
        f"CLARIN_REDIS_URL=redis://127.0.0.1:{redis_port}/2\n"
        f"CLARIN_NATS_URL=nats://127.0.0.1:{nats_port}\n"
    )
    args = ["--var-dir", str(var), "--env-file", str(env_file)]
    database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/clarin_cli"
    try:
        up = _cli(["up", *args], env)
        assert up.returncode == 0, up.stderr
        assert up.stdout == expected
        assert env_file.read_text() == expected
        # the servers outlived the CLI process
        for port in (pg_port, redis_port, nats_port):
            assert tcp_answers("127.0.0.1", port)
        with psycopg.connect(database_url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("create table kept (v int)")
            conn.execute("insert into kept values (42)")
        assert (var / "redis" / "redis.pid").is_file()
        assert (var / "nats" / "nats.pid").is_file()
        assert (var / "nats" / "jetstream").is_dir()
        assert (var / "postgres" / "postgres.log").is_file()

        # `up` again while running: nothing to start, the given URLs answer and are kept
        again = _cli(["up", *args], env)
        assert again.returncode == 0, again.stderr
        assert again.stdout == expected.replace("127.0.0.1", "localhost", 1)

        status = _cli(["status", *args], env)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" up ") == 3
        assert "embedded, pid" in status.stdout

        down = _cli(["down", *args], env)
        assert down.returncode == 0, down.stderr
        for port in (pg_port, redis_port, nats_port):
            assert not tcp_answers("127.0.0.1", port)
        status = _cli(["status", *args], env)
        assert status.returncode == 1

        # a second `up` reuses the data directory: no initdb, the data is still there
        pg_version = var / "postgres" / "data" / "PG_VERSION"
        mtime = pg_version.stat().st_mtime_ns
        up = _cli(["up", *args], env)
        assert up.returncode == 0, up.stderr
        assert pg_version.stat().st_mtime_ns == mtime
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            assert conn.execute("select v from kept").fetchone() == (42,)
    finally:
        stop_all(var)
    for port in (pg_port, redis_port, nats_port):
        assert not tcp_answers("127.0.0.1", port)


def test_start_fails_clearly_when_port_is_taken(tmp_path: Path) -> None:
    from clarin_devkit.devservers import PortInUseError, start_redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            start_redis(tmp_path / "redis", port)


def test_start_is_idempotent_and_refuses_another_port(tmp_path: Path) -> None:
    from clarin_devkit.devservers import start_nats, start_redis

    redis_port, nats_port, other = free_ports(3)
    try:
        start_redis(tmp_path / "redis", redis_port)
        start_nats(tmp_path / "nats", nats_port)
        pid = (tmp_path / "redis" / "redis.pid").read_text()
        started = time.monotonic()
        start_redis(tmp_path / "redis", redis_port)
        start_nats(tmp_path / "nats", nats_port)
        assert time.monotonic() - started < 2
        assert (tmp_path / "redis" / "redis.pid").read_text() == pid
        with pytest.raises(RuntimeError, match="already runs"):
            start_redis(tmp_path / "redis", other)
        with pytest.raises(RuntimeError, match="already runs"):
            start_nats(tmp_path / "nats", other)
        assert not tcp_answers("127.0.0.1", other)
    finally:
        stop_all(tmp_path)
    assert not tcp_answers("127.0.0.1", redis_port)
    assert not tcp_answers("127.0.0.1", nats_port)
