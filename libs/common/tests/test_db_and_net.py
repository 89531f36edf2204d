"""clarin_common.db's database helpers and clarin_common.net's probes, on real servers."""

from __future__ import annotations

import socket
import uuid

import psycopg

from clarin_common.db import database_name, ensure_database_sync, with_database
from clarin_common.net import host_port, tcp_answers, url_answers
from clarin_devkit.testing.plugin import TestServers


def test_url_helpers() -> None:
    url = "postgresql+asyncpg://u:p@db.example:6543/clarin?sslmode=require"
    assert database_name(url) == "clarin"
    assert database_name("postgresql://u@h:1") == "postgres"
    assert with_database(url, "other") == (
        "postgresql+asyncpg://u:p@db.example:6543/other?sslmode=require"
    )
    assert host_port(url) == ("db.example", 6543)
    assert host_port("nats://n1") == ("n1", 4222)
    assert host_port("redis://:secret@cache/0") == ("cache", 6379)


def test_ensure_database_creates_once(test_servers: TestServers) -> None:
    name = f"clarin_ensure_{uuid.uuid4().hex[:8]}"
    # the SQLAlchemy-style scheme services accept works too
    url = with_database(test_servers.database_url, name).replace(
        "postgresql://", "postgresql+psycopg://", 1
    )
    try:
        assert ensure_database_sync(url) is True
        assert ensure_database_sync(url) is False
        with psycopg.connect(with_database(test_servers.database_url, name)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        with psycopg.connect(test_servers.admin_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_probes_tell_a_listening_port_from_a_closed_one(test_servers: TestServers) -> None:
    assert url_answers(test_servers.database_url)
    assert url_answers(test_servers.nats_url)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        # bound but not listening: refused
        assert not tcp_answers("127.0.0.1", port)
        assert not url_answers(f"redis://127.0.0.1:{port}/0")
        # a comma-separated NATS list answers when one of its servers does
        assert url_answers(f"nats://127.0.0.1:{port},{test_servers.nats_url}")
        listener.listen()
        assert tcp_answers("127.0.0.1", port)
