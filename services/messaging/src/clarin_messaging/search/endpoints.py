from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from clarin_common.auth import CurrentUser
from clarin_messaging.deps import MessagingCtx
from clarin_messaging.search import service
from clarin_messaging.search.schemas import SearchPage

router = APIRouter(prefix="/api/search", tags=["search"])


@router.get("/messages", response_model=SearchPage)
async def search_messages(
    user: CurrentUser,
    ctx: MessagingCtx,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    device_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SearchPage:
    return await service.search_messages(
        ctx,
        user,
        q,
        device_id=str(device_id) if device_id else None,
        limit=limit,
        cursor=cursor,
    )
