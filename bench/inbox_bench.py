"""Team inbox benchmark: message search over 1,000,000 messages and the inbox's
"mine, open" list over 100,000 chats, through the messaging service's HTTP API.

In a fresh database on the PostgreSQL server you name, the bench applies the
messaging migrations and fills one account with ``--chats`` conversations
(status open/pending/resolved, 70 % assigned among ``--users`` agents, labels)
and ``--messages`` messages whose bodies are Spanish-like text drawn from a
Zipf-shaped vocabulary with accents. It starts the messaging service as a real
process (consumers off, a private embedded NATS) and measures, one request at a
time:

* ``GET /api/search/messages?q=`` for words of every frequency band, written
  without accents; beside it the same SQL straight on asyncpg (the ceiling of
  the query itself) and ``GET /api/chats/{id}`` (a primary-key lookup: the
  ceiling of the HTTP stack);
* ``GET /api/chats?assigned_to=me&status=open`` (first page and the next one by
  cursor), ``?label=`` and ``/api/chats/counts``, beside the same SQL.

    uv run python bench/inbox_bench.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
import httpx

from clarin_common.db import migrate_sync
from clarin_devkit.devservers import ephemeral_servers
from clarin_devkit.testing import free_port, make_token
from clarin_messaging.chats.repository import ChatFilters, list_for_account
from clarin_messaging.search.repository import search_for_account

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services" / "messaging" / "migrations"

# the head of the vocabulary: the words chats are made of (function words first)
COMMON = (  # noqa: SIM905 - a paragraph reads better than 170 quoted words
    "de que la el en y a los se del las un por con no una su para es al lo como más "
    "pero sus le ya o este sí porque esta entre cuando muy sin sobre también me hasta "
    "hay donde quien desde todo nos durante todos uno les ni contra otros ese eso ante "
    "ellos e esto mí antes algunos qué unos yo otro otras otra él tanto esa estos mucho "
    "quienes nada muchos cual poco ella estar estas algunas algo nosotros hola gracias "
    "buenos días buenas tardes noches precio pedido envío café té mañana tarde hoy ayer "
    "cuánto cuesta tienen disponible catálogo factura pago transferencia tarjeta "
    "dirección entrega semana mes kilo kilos caja cajas paquete producto productos "
    "descuento oferta promoción cliente mayorista tienda sucursal horario abierto "
    "cerrado teléfono número correo información confirmar confirmo recibí llegó "
    "devolución cambio talla color rojo azul verde negro blanco grande pequeño "
    "mediano orgánico molido grano tostado oaxaca chiapas veracruz colombia perú "
    "montaña señor señora josé maría peña núñez ñandú año años útil rápido también"
).split()
SYLLABLES = (  # noqa: SIM905
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo fu ga go gu la le li lo lu "
    "ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti "
    "to tu va ve vi vo za zo ña ño ché chá llo rré tí ó á é"
).split()


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def plain(word: str) -> str:
    """The word as someone types it in a hurry: no accents."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 0.50) * 1000, 2),
        "p95_ms": round(pct(values, 0.95) * 1000, 2),
        "p99_ms": round(pct(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def with_db(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, ""))


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, keep: bool) -> AsyncIterator[str]:
    name = f"clarin_bench_inbox_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield with_db(admin_url, name)
    finally:
        if not keep:
            conn = await asyncpg.connect(admin_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
        else:
            print(f"kept database {name}")


async def load(
    db_url: str, account: str, users: list[str], words: list[str], args: argparse.Namespace
) -> dict[str, float]:
    """Chats and messages generated by PostgreSQL itself (generate_series)."""
    conn = await asyncpg.connect(db_url, server_settings={"search_path": "messaging,public"})
    timings: dict[str, float] = {}
    try:
        device = str(uuid.uuid4())
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO chats (id, account_id, device_id, jid, name, phone, last_message_preview,
                               last_message_at, activity_at, unread_count, status, assigned_to,
                               labels)
            SELECT gen_random_uuid(), $1::uuid, $2::uuid,
                   (5215500000000 + i)::text || '@s.whatsapp.net',
                   'Contacto ' || i, (5215500000000 + i)::text, 'hola',
                   t, t, CASE WHEN random() < 0.15 THEN 1 + floor(random() * 4)::int ELSE 0 END,
                   -- 40 % open, 10 % pending, 50 % resolved
                   (ARRAY['open', 'open', 'open', 'open', 'pending', 'resolved', 'resolved',
                          'resolved', 'resolved', 'resolved'])[1 + floor(random() * 10)::int],
                   CASE WHEN random() < 0.7
                        THEN ($3::uuid[])[1 + floor(random() * cardinality($3))::int] END,
                   CASE WHEN random() < 0.3
                        THEN ARRAY[(ARRAY['vip', 'mayorista', 'factura', 'reclamo', 'envío'])
                                   [1 + floor(random() * 5)::int]]
                        ELSE '{}' END
            FROM generate_series(1, $4::int) AS i,
                 LATERAL (SELECT now() - random() * interval '365 days' AS t) AS at
            """,
            account,
            device,
            users,
            args.chats,
        )
        timings["chats_s"] = time.perf_counter() - started

        # the GIN index is built once after the load (as a bulk import would)
        await conn.execute("DROP INDEX messages_search_idx")
        chat_ids = [r["id"] for r in await conn.fetch("SELECT id FROM chats ORDER BY id")]
        rng = random.Random(args.seed)
        span = 365 * 86400 / args.messages
        start = datetime.now(UTC) - timedelta(days=365)
        n_words = len(words)
        started = time.perf_counter()
        step = 100_000
        for offset in range(0, args.messages, step):
            n = min(step, args.messages - offset)
            rows = [
                (
                    uuid.uuid4(),
                    uuid.UUID(account),
                    rng.choice(chat_ids),
                    uuid.UUID(device),
                    f"B{offset + i}",
                    "in",
                    "text",
                    # a Zipf-like draw: low ranks (common words) far more often
                    " ".join(
                        words[int(n_words * rng.random() ** args.zipf)]
                        for _ in range(rng.randint(4, 14))
                    ),
                    "read",
                    # a year of messages, stored in the order they arrived
                    start + timedelta(seconds=(offset + i) * span + rng.random() * span),
                )
                for i in range(n)
            ]
            await conn.copy_records_to_table(
                "messages",
                records=rows,
                columns=[
                    "id",
                    "account_id",
                    "chat_id",
                    "device_id",
                    "wa_message_id",
                    "direction",
                    "type",
                    "body",
                    "status",
                    "sent_at",
                ],
                schema_name="messaging",
            )
            print(f"  {offset + n:,} messages", flush=True)
        timings["messages_s"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("CREATE INDEX messages_search_idx ON messages USING gin (search_vector)")
        timings["gin_index_s"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE chats")
        await conn.execute("VACUUM ANALYZE messages")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
        timings["messages_table_mb"] = (
            await conn.fetchval("SELECT pg_total_relation_size('messages')") / 1e6
        )
        timings["search_index_mb"] = (
            await conn.fetchval("SELECT pg_relation_size('messages_search_idx')") / 1e6
        )
    finally:
        await conn.close()
    return timings


async def document_frequencies(db_url: str, sample: int) -> tuple[dict[str, int], int]:
    """How many messages hold each word (counted on a random sample, scaled up)."""
    conn = await asyncpg.connect(db_url, server_settings={"search_path": "messaging,public"})
    try:
        total = int(await conn.fetchval("SELECT count(*) FROM messages"))
        share = min(1.0, sample / max(total, 1))
        rows = await conn.fetch(
            "SELECT word, ndoc FROM ts_stat("
            f"'SELECT search_vector FROM messages WHERE random() < {share:.6f}')"
        )
        return {r["word"]: int(r["ndoc"] / share) for r in rows}, total
    finally:
        await conn.close()


def pick_queries(
    words: list[str], freq: dict[str, int], total: int, n: int, rng: random.Random
) -> dict[str, list[str]]:
    """Queries per band of how many messages match, written without accents."""
    by_plain: dict[str, int] = {}
    for word in words:
        key = plain(word).lower()
        by_plain[key] = max(by_plain.get(key, 0), freq.get(key, 0))
    bands: dict[str, list[str]] = {
        "rare (<0.1 % of messages)": [],
        "medium (0.1-1 %)": [],
        "frequent (1-5 %)": [],
        "very frequent (>5 %)": [],
    }
    for word, count in by_plain.items():
        share = count / max(total, 1)
        if count == 0:
            continue
        if share < 0.001:
            bands["rare (<0.1 % of messages)"].append(word)
        elif share < 0.01:
            bands["medium (0.1-1 %)"].append(word)
        elif share < 0.05:
            bands["frequent (1-5 %)"].append(word)
        else:
            bands["very frequent (>5 %)"].append(word)
    queries: dict[str, list[str]] = {}
    for band, pool in bands.items():
        if pool:
            queries[band] = [rng.choice(pool) for _ in range(n)]
    # two words, a frequent one and a rarer one: what people type ("precio cafe")
    frequent = bands["frequent (1-5 %)"] + bands["very frequent (>5 %)"]
    medium = bands["medium (0.1-1 %)"] + bands["rare (<0.1 % of messages)"]
    if frequent and medium:
        queries["two words"] = [f"{rng.choice(frequent)} {rng.choice(medium)}" for _ in range(n)]
    return queries


async def count_matching(pool: asyncpg.Pool, account: str, filters: ChatFilters) -> int:
    rows = await list_for_account(pool, account, filters, after=None, limit=10_000_000)
    return len(rows)


async def timed(fn: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    out = []
    for _ in range(times):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


@contextlib.asynccontextmanager
async def messaging_process(db_url: str, nats_url: str, log: Path) -> AsyncIterator[str]:
    port = free_port()
    # explicit settings only: no Clarin variable of the caller, no `.env` (make run's
    # fresh key pair would refuse the bench's tokens)
    workdir = benchenv.isolate()
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": db_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "MESSAGING_PORT": str(port),
        "MESSAGING_CONSUMERS_ENABLED": "false",
        "MESSAGING_DEVICES_URL": f"http://127.0.0.1:{free_port()}",
        "MESSAGING_AUTH_URL": f"http://127.0.0.1:{free_port()}",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - before anything is timed
            [sys.executable, "-c", "from clarin_messaging.main import run; run()"],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"messaging exited, see {log}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


async def run(args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    account = str(uuid.uuid4())
    users = [str(uuid.uuid4()) for _ in range(args.users)]
    me = users[0]
    words = vocabulary(args.vocabulary, rng)
    migrate_sync(db_url, "messaging", MIGRATIONS)
    result: dict[str, Any] = {}
    if args.reuse_db:
        # measure again on a database an earlier run kept (--keep-db)
        conn = await asyncpg.connect(db_url, server_settings={"search_path": "messaging,public"})
        account = str(await conn.fetchval("SELECT account_id FROM chats LIMIT 1"))
        me = str(
            await conn.fetchval(
                "SELECT assigned_to FROM chats WHERE assigned_to IS NOT NULL"
                " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
            )
        )
        await conn.close()
    else:
        print(f"loading {args.chats:,} chats and {args.messages:,} messages…", flush=True)
        result["load"] = await load(db_url, account, users, words, args)
    freq, total = await document_frequencies(db_url, 50_000)
    queries = pick_queries(words, freq, total, args.queries, rng)

    token = make_token(account_id=account, user_id=me, role="agent")
    headers = {"Authorization": f"Bearer {token}"}
    pool = await asyncpg.create_pool(
        db_url, min_size=1, max_size=2, server_settings={"search_path": "messaging,public"}
    )
    assert pool is not None
    with (
        tempfile.TemporaryDirectory(prefix="inbox-bench-") as tmp,
        ephemeral_servers(Path(tmp), kinds={"nats"}) as servers,
    ):
        async with (
            messaging_process(db_url, servers.nats_url, Path(tmp) / "messaging.log") as url,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client,
        ):
            chat_id = str(await pool.fetchval("SELECT id FROM chats LIMIT 1"))

            async def pk_lookup() -> None:
                resp = await client.get(f"/api/chats/{chat_id}")
                assert resp.status_code == 200, resp.text

            await timed(pk_lookup, 50)  # warm-up
            result["ceiling_http_get_chat_by_id"] = summary(await timed(pk_lookup, args.queries))

            # ---- the inbox list -------------------------------------------------
            lists: dict[str, dict[str, Any]] = {}
            for name, params, filters in (
                (
                    "assigned_to=me&status=open",
                    {"assigned_to": "me", "status": "open"},
                    ChatFilters(assigned_to=me, status="open"),
                ),
                ("status=open (All tab)", {"status": "open"}, ChatFilters(status="open")),
                (
                    "assigned_to=none&status=open",
                    {"assigned_to": "none", "status": "open"},
                    ChatFilters(assigned_to="none", status="open"),
                ),
                ("label=vip", {"label": "vip"}, ChatFilters(label="vip")),
            ):
                first = (await client.get("/api/chats", params=params)).json()
                second_params = {**params, "cursor": first["next_cursor"]}

                async def api_first(p: dict[str, str] = params) -> None:
                    resp = await client.get("/api/chats", params=p)
                    assert resp.status_code == 200, resp.text

                async def api_next(p: dict[str, Any] = second_params) -> None:
                    resp = await client.get("/api/chats", params=p)
                    assert resp.status_code == 200, resp.text

                async def sql(f: ChatFilters = filters) -> None:
                    await list_for_account(pool, account, f, after=None, limit=51)

                await timed(api_first, 10)
                lists[name] = {
                    "api_first_page": summary(await timed(api_first, args.queries)),
                    "api_next_page": summary(await timed(api_next, args.queries)),
                    "same_sql": summary(await timed(sql, args.queries)),
                    "matching_chats": await count_matching(pool, account, filters),
                }

            async def counts() -> None:
                resp = await client.get("/api/chats/counts", params={"status": "open"})
                assert resp.status_code == 200, resp.text

            lists["counts?status=open"] = {"api": summary(await timed(counts, args.queries))}
            result["chat_list"] = lists

            # ---- search -----------------------------------------------------------
            searches: dict[str, dict[str, Any]] = {}
            everything: list[float] = []
            for band, qs in queries.items():
                api_times: list[float] = []
                sql_times: list[float] = []
                hits: list[int] = []
                for q in qs:
                    started = time.perf_counter()
                    resp = await client.get("/api/search/messages", params={"q": q, "limit": 20})
                    api_times.append(time.perf_counter() - started)
                    assert resp.status_code == 200, resp.text
                    hits.append(len(resp.json()["items"]))
                    started = time.perf_counter()
                    await search_for_account(pool, account, q, device_id=None, after=None, limit=21)
                    sql_times.append(time.perf_counter() - started)
                everything += api_times
                searches[band] = {
                    "examples": qs[:5],
                    "api": summary(api_times),
                    "same_sql": summary(sql_times),
                    "share_with_a_full_page": round(sum(h == 20 for h in hits) / len(hits), 2),
                }
            searches["all of the above"] = {"api": summary(everything)}
            result["search"] = searches
    await pool.close()
    return result


def report(result: dict[str, Any]) -> None:
    load = result.get("load")
    if load:
        print(
            f"\nload: chats {load['chats_s']:.1f} s, messages {load['messages_s']:.1f} s, "
            f"GIN index {load['gin_index_s']:.1f} s,"
            f" vacuum analyze {load['vacuum_analyze_s']:.1f} s;"
            f" messages {load['messages_table_mb']:.0f} MB,"
            f" search index {load['search_index_mb']:.0f} MB"
        )
    c = result["ceiling_http_get_chat_by_id"]
    print(
        "ceiling GET /api/chats/{id} (HTTP + PK lookup):"
        f" p50 {c['p50_ms']} ms, p95 {c['p95_ms']} ms"
    )
    print(
        "\nchat list                         API p50 / p95      next page p95"
        "    same SQL p95   matching"
    )
    for name, r in result["chat_list"].items():
        if "api_first_page" in r:
            first = r["api_first_page"]
            print(
                f"  {name:32s} {first['p50_ms']:6} / {first['p95_ms']:6} ms"
                f"   {r['api_next_page']['p95_ms']:8} ms   {r['same_sql']['p95_ms']:8} ms"
                f"   {r['matching_chats']:,}"
            )
        else:
            print(f"  {name:32s} {r['api']['p50_ms']:6} / {r['api']['p95_ms']:6} ms")
    print(
        "\nsearch                            API p50 / p95 / max          same SQL p95"
        "   full pages  e.g."
    )
    for band, r in result["search"].items():
        a = r["api"]
        extra = (
            f"   {r['same_sql']['p95_ms']:8} ms   {r['share_with_a_full_page']:8}"
            f"    {', '.join(r['examples'][:3])}"
            if "same_sql" in r
            else ""
        )
        print(f"  {band:32s} {a['p50_ms']:6} / {a['p95_ms']:6} / {a['max_ms']:7} ms{extra}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", required=True, help="a PostgreSQL server (a fresh database is created)"
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument(
        "--zipf", type=float, default=4.0, help="skew of the word draw (power of random())"
    )
    parser.add_argument("--queries", type=int, default=200, help="requests per measured case")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep-db", action="store_true", help="keep the database (name printed)")
    parser.add_argument("--reuse-db", help="measure on a database kept by an earlier run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.reuse_db:
        result = await run(args, with_db(args.database_url, args.reuse_db))
    else:
        async with fresh_database(args.database_url, args.keep_db) as db_url:
            result = await run(args, db_url)
    report(result)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
