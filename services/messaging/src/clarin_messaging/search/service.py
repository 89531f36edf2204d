"""Message search of the caller's account, best match first."""

from __future__ import annotations

import re

from clarin_common.auth import Principal
from clarin_common.errors import ValidationFailed
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.context import Messaging
from clarin_messaging.convert import chat_from_row, message_from_row
from clarin_messaging.pagination import decode_ranked_cursor, encode_ranked_cursor
from clarin_messaging.search import repository as repo
from clarin_messaging.search.schemas import SearchHit, SearchPage

# a query needs at least one letter or digit to match any word
_WORD = re.compile(r"[^\W_]")


async def search_messages(
    ctx: Messaging,
    principal: Principal,
    q: str,
    *,
    device_id: str | None,
    limit: int,
    cursor: str | None,
) -> SearchPage:
    if not _WORD.search(q):
        raise ValidationFailed.field(["query", "q"], "Type at least one letter or digit")
    after = decode_ranked_cursor(cursor) if cursor else None
    rows = await repo.search_for_account(
        ctx.pool, principal.account_id, q, device_id=device_id, after=after, limit=limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    chat_rows = await chats_repo.get_many_for_account(
        ctx.pool, list({str(r["chat_id"]) for r in page}), principal.account_id
    )
    chats = {str(r["id"]): chat_from_row(r) for r in chat_rows}
    last = page[-1] if page else None
    next_cursor = (
        encode_ranked_cursor(last["rank"], last["sent_at"], str(last["id"]))
        if more and last is not None
        else None
    )
    return SearchPage(
        items=[
            SearchHit(message=message_from_row(r), chat=chats[str(r["chat_id"])])
            for r in page
            if str(r["chat_id"]) in chats
        ],
        next_cursor=next_cursor,
    )
