"""clarin_common.db's database helpers and clarin_common.net's probes, on real servers."""

from __future__ import annotations

import socket
import uuid

import asyncpg
import psycopg
from pydantic import BaseModel

from clarin_common.db import (
    SqlArgs,
    database_name,
    ensure_database_sync,
    escape_like,
    str_or_none,
    to_model,
    with_database,
)
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


async def test_row_helpers_on_real_rows(test_servers: TestServers) -> None:
    class Row(BaseModel):
        id: str
        owner: str | None
        amount: float

    conn = await asyncpg.connect(test_servers.database_url)
    try:
        needle = "50%_off\\"
        args = SqlArgs(["get 50%_off\\ today", "get 50x off today", "50%Xoff\\"])
        pattern = args.add("%" + escape_like(needle) + "%")
        assert pattern == "$2"
        texts = await conn.fetch(
            f"SELECT t FROM unnest($1::text[]) AS t WHERE t LIKE {pattern} ORDER BY t",
            *args.values,
        )
        assert [r["t"] for r in texts] == ["get 50%_off\\ today"]  # literally, no wildcards

        key = uuid.uuid4()
        row = await conn.fetchrow(
            "SELECT $1::uuid AS id, NULL::uuid AS owner, 12.50::numeric AS amount, 'x' AS extra",
            key,
        )
        assert row is not None
        assert to_model(Row, row) == Row(id=str(key), owner=None, amount=12.5)
        assert str_or_none(key) == str(key) and str_or_none(None) is None
    finally:
        await conn.close()
