"""Full-text search over message bodies (``messages.search_vector``, GIN-indexed).

Words are compared without accents or case: the stored vector is built from
``messaging.search_text(body)`` (unaccent + lower) and the query goes through
the same function and the same parser, so "cafe" finds "café" and "CAFÉ".
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from clarin_messaging.messages.repository import SELECT_MESSAGE

# Every word of the query must appear; each also matches as a prefix ("cafe"
# finds "cafetería"), and a word matched whole ranks above one matched only as a
# prefix. Ties go to the newest message. The page is cut before the messages'
# other columns and media are read.
_SEARCH = (
    r"""
WITH words AS (
    -- the query's words as the stored vectors hold them, quoted for to_tsquery
    SELECT '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''' AS word
    FROM unnest(to_tsvector('simple', messaging.search_text($2)))
), q AS (
    SELECT to_tsquery('simple', string_agg(word || ':*', ' & ')) AS prefix,
           to_tsquery('simple', string_agg(word, ' & ')) AS whole
    FROM words
), page AS (
    SELECT id, rank FROM (
        SELECT m.id, m.sent_at,
               (ts_rank(m.search_vector, q.prefix) + ts_rank(m.search_vector, q.whole))::float8
                   AS rank
        FROM messages m, q
        WHERE m.account_id = $1 AND m.search_vector @@ q.prefix
          AND ($3::uuid IS NULL OR m.device_id = $3)
    ) hit
    WHERE $4::float8 IS NULL OR (hit.rank, hit.sent_at, hit.id) < ($4, $5::timestamptz, $6::uuid)
    ORDER BY hit.rank DESC, hit.sent_at DESC, hit.id DESC
    LIMIT $7
)
"""
    + SELECT_MESSAGE.replace("SELECT ", "SELECT page.rank, ", 1)
    + """
JOIN page ON page.id = m.id
ORDER BY page.rank DESC, m.sent_at DESC, m.id DESC
"""
)


async def search_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    query: str,
    *,
    device_id: str | None,
    after: tuple[float, datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        _SEARCH,
        account_id,
        query,
        device_id,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
    )
    return rows
