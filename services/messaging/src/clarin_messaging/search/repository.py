"""Full-text search over message bodies (``messages.search_vector``, GIN-indexed).

Words are compared without accents or case: the stored vector is built from
``messaging.search_text(body)`` (unaccent + lower) and the query goes through
the same function and the same parser, so "cafe" finds "café" and "CAFÉ".

Ranking reads every candidate's vector, so it is bounded: the candidates are the
newest ``CANDIDATES`` matching messages of the account (a query narrowed with
one more word reaches further back). PostgreSQL then picks, from the query's
own selectivity, between the GIN index (few matches: all of them, newest first)
and the ``(account_id, sent_at)`` index read newest first until enough match
(frequent words stop after a few thousand rows instead of ranking a fifth of
the table).
"""

from __future__ import annotations

import asyncpg

from clarin_common.paging import Key
from clarin_messaging.messages.repository import SELECT_MESSAGE

CANDIDATES = 500

# The query's words as the stored vectors hold them (same parser, same
# unaccent), each quoted for to_tsquery: every word must appear, each also as the
# start of a longer word ("cafe" finds "cafetería").
_QUERIES = r"""
WITH words AS (
    SELECT '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''' AS word
    FROM unnest(to_tsvector('simple', messaging.search_text($1)))
)
SELECT to_tsquery('simple', string_agg(word || ':*', ' & '))::text AS prefix,
       to_tsquery('simple', string_agg(word, ' & '))::text AS whole
FROM words
"""

# A word matched whole ranks above one matched only as a prefix; ties go to the
# newest message. The page is cut before the messages' other columns and media
# are read. The tsqueries are parameters (constants to the planner, with
# force_custom_plan) so that it can estimate how many rows match.
_SEARCH = (
    """
WITH candidates AS (
    SELECT m.id, m.sent_at, m.search_vector
    FROM messages m
    WHERE m.account_id = $1 AND m.search_vector @@ $2::tsquery
      AND ($4::uuid IS NULL OR m.device_id = $4)
    ORDER BY m.sent_at DESC
    LIMIT $9
), page AS (
    SELECT id, rank FROM (
        SELECT c.id, c.sent_at,
               (ts_rank(c.search_vector, $2::tsquery)
                + ts_rank(c.search_vector, $3::tsquery))::float8 AS rank
        FROM candidates c
    ) hit
    WHERE $5::float8 IS NULL OR (hit.rank, hit.sent_at, hit.id) < ($5, $6::timestamptz, $7::uuid)
    ORDER BY hit.rank DESC, hit.sent_at DESC, hit.id DESC
    LIMIT $8
)
"""
    + SELECT_MESSAGE.replace("SELECT ", "SELECT page.rank, ", 1)
    + """
JOIN page ON page.id = m.id
ORDER BY page.rank DESC, m.sent_at DESC, m.id DESC
"""
)


async def search_for_account(
    pool: asyncpg.Pool,
    account_id: str,
    query: str,
    *,
    device_id: str | None,
    after: Key | None,
    limit: int,
    candidates: int = CANDIDATES,
) -> list[asyncpg.Record]:
    async with pool.acquire() as conn, conn.transaction():
        # a generic plan would not know how common the words are
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        queries = await conn.fetchrow(_QUERIES, query)
        if queries is None or queries["prefix"] is None:
            return []
        rows: list[asyncpg.Record] = await conn.fetch(
            _SEARCH,
            account_id,
            queries["prefix"],
            queries["whole"],
            device_id,
            after.rank if after else None,
            after.at if after else None,
            after.id if after else None,
            limit,
            candidates,
        )
    return rows
