"""Message search of the caller's account, best match first."""

from __future__ import annotations

import re

from clarin_common.auth import Principal
from clarin_common.errors import ValidationFailed
from clarin_common.paging import Key, decode_cursor, page
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.convert import message_from_row
from clarin_messaging.deps import MessagingContext
from clarin_messaging.search import repository as repo
from clarin_messaging.search.schemas import SearchHit, SearchPage

# a query needs at least one letter or digit to match any word
_WORD = re.compile(r"[^\W_]")


async def search_messages(
    ctx: MessagingContext,
    principal: Principal,
    q: str,
    *,
    device_id: str | None,
    limit: int,
    cursor: str | None,
) -> SearchPage:
    if not _WORD.search(q):
        raise ValidationFailed.field(["query", "q"], "Type at least one letter or digit")
    after = decode_cursor(cursor, ranked=True) if cursor else None
    rows = await repo.search_for_account(
        ctx.pool, principal.account_id, q, device_id=device_id, after=after, limit=limit + 1
    )
    items, next_cursor = page(
        rows, limit, lambda r: Key(r["sent_at"], str(r["id"]), rank=float(r["rank"]))
    )
    chat_rows = await chats_repo.get_many_for_account(
        ctx.pool, list({str(r["chat_id"]) for r in items}), principal.account_id
    )
    chats = {c.id: c for c in chat_rows}
    return SearchPage(
        items=[
            SearchHit(message=message_from_row(r), chat=chats[str(r["chat_id"])])
            for r in items
            if str(r["chat_id"]) in chats
        ],
        next_cursor=next_cursor,
    )
