"""The whatsmeow session store, as the worker reads it (SQL only).

whatsmeow keeps its sessions in the devices database, schema ``store_schema``
(``devices_wa``), reached by lib/pq with ``search_path``. The worker reads the
``whatsmeow_device`` table itself: asking neonize
(``ClientFactory.get_all_devices_from_db``) would leak one more database pool
per question, and a JID missing from the store aborts a child process in Go.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog

from clarin_common.ids import normalize_jid

log = structlog.get_logger(__name__)

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def store_dsn(database_url: str, schema: str) -> str:
    """The DSN neonize opens (lib/pq): ``postgres://``, our schema as search_path."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("sslmode", "disable")
    query["search_path"] = schema
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


class SessionStore:
    """One asyncpg connection of the worker to the whatsmeow tables."""

    def __init__(self, database_url: str, schema: str) -> None:
        if not SCHEMA_RE.match(schema):
            raise ValueError(f"invalid store schema name {schema!r}")
        self.database_url = database_url
        self.schema = schema
        self._db: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _conn(self) -> asyncpg.Connection:
        if self._db is None or self._db.is_closed():
            self._db = await asyncpg.connect(self.database_url)
        return self._db

    @contextlib.asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        """The schema exists, and the caller holds the store's creation lock (a
        PostgreSQL advisory lock, shared by every worker) until it leaves: two
        workers starting at once would race creating the schema and
        whatsmeow's tables (its upgrade runs CREATE TABLE unguarded)."""
        key = f"clarin:whatsmeow-store:{self.schema}"
        async with self._lock:
            conn = await self._conn()
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        try:
            async with self._lock:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            yield
        finally:
            async with self._lock:
                with contextlib.suppress(Exception):  # a lost connection took it along
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def stored_jid(self, jid: str) -> str | None:
        """The store's JID for ``jid`` (exact, else the one of the same number)."""
        sql = f'SELECT jid FROM "{self.schema}".whatsmeow_device'
        async with self._lock:
            conn = await self._conn()
            try:
                rows = await conn.fetch(sql)
            except asyncpg.UndefinedTableError:
                return None
        stored = [str(r["jid"]) for r in rows]
        if jid in stored:
            return jid
        same = [s for s in stored if normalize_jid(s) == normalize_jid(jid)]
        return same[0] if len(same) == 1 else None

    async def delete(self, jid: str) -> None:
        """Forget a session (whatsmeow's own tables cascade from the device row)."""
        sql = f'DELETE FROM "{self.schema}".whatsmeow_device WHERE jid = $1'
        try:
            async with self._lock:
                conn = await self._conn()
                await conn.execute(sql, jid)
        except Exception as exc:
            log.warning("neonize_session_delete_failed", jid=jid, error=str(exc))

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close()
                self._db = None
