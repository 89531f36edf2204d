"""PostgreSQL: the asyncpg pool and per-service schema migrations (yoyo)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import structlog
from pydantic import BaseModel

log = structlog.get_logger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection
Record = asyncpg.Record

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

# Tables every service schema gets from libs/common (the outbox), applied after
# the service's own migrations.
COMMON_MIGRATIONS = Path(__file__).parent / "migrations"


def _check_schema(schema: str) -> str:
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` first on their search path."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": f"{_check_schema(schema)},public"},
        command_timeout=30,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


def _yoyo_uri(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    scheme = "postgresql+psycopg"
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


def _advisory_key(schema: str) -> int:
    # a stable 63-bit key per schema (hash() is salted per process)
    import hashlib

    return int.from_bytes(hashlib.sha256(f"clarin:migrate:{schema}".encode()).digest()[:8]) >> 1


def migrate_sync(dsn: str, schema: str, migrations_dir: Path) -> list[str]:
    """Create ``schema`` and apply the pending migrations of ``migrations_dir``,
    then those of :data:`COMMON_MIGRATIONS` (the tables every service has).

    Runs under a PostgreSQL advisory lock keyed by the schema, so replicas that
    start together apply each migration once. Returns the ids applied.
    """
    import psycopg
    from yoyo import get_backend, read_migrations

    _check_schema(schema)
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_advisory_key(schema),))
        try:
            lock_conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            backend = get_backend(_yoyo_uri(dsn, schema))
            try:
                with backend.lock():
                    # the service's first: a common table may already be one of
                    # its own (leads made the outbox before it was shared)
                    for source in (migrations_dir, COMMON_MIGRATIONS):
                        pending = backend.to_apply(read_migrations(str(source)))
                        backend.apply_migrations(pending)
                        applied.extend(m.id for m in pending)
            finally:
                backend.connection.close()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_advisory_key(schema),))
    if applied:
        log.info("migrations_applied", schema=schema, ids=applied)
    return applied


async def migrate(dsn: str, schema: str, migrations_dir: Path) -> list[str]:
    return await anyio.to_thread.run_sync(migrate_sync, dsn, schema, migrations_dir)


def database_name(dsn: str) -> str:
    """The database a PostgreSQL URL names (``postgres`` when it names none)."""
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead (same server, user and options)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _libpq(dsn: str) -> str:
    # "postgresql+asyncpg://…" and the like are SQLAlchemy-style: libpq wants the bare scheme
    return "postgresql" + dsn[dsn.index("://") :]


def ensure_database_sync(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist yet; True if it did not.

    A database the user can already connect to is left alone without asking the
    server's maintenance database (which a restricted user may not reach).
    """
    import psycopg
    from psycopg import sql

    dsn = _libpq(dsn)
    name = database_name(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            return False
    except psycopg.OperationalError:
        pass
    with psycopg.connect(
        with_database(dsn, "postgres"), autocommit=True, connect_timeout=5
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created by someone else meanwhile
        return True


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None


M = TypeVar("M", bound=BaseModel)


def escape_like(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (``%``, ``_`` and ``\\``
    escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlArgs:
    """The arguments of a statement built from the filters given: ``add`` keeps a
    value and answers its placeholder (``$1``, ``$2``, …)."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def str_or_none(value: Any) -> str | None:
    """A nullable uuid (or other) column as the string the API shows."""
    return None if value is None else str(value)


def plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its uuids as strings (the API's ids are strings)."""
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in record.items()}


def to_model(model: type[M], record: Mapping[str, Any]) -> M:
    """The pydantic model of a row: columns by name, uuids as strings, numerics
    as the model's numbers; columns the model does not name are ignored."""
    return model.model_validate(plain(record))
