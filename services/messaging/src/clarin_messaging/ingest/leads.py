"""Link chats to leads from ``app.{account}.lead_created|lead_updated|lead_deleted``.

A chat belongs to the lead whose ``chat_id`` is the chat or whose phone is the
chat's phone. The links are also remembered (``lead_links``), so a chat that
only appears after its lead was created is linked when it is created.
"""

from __future__ import annotations

import uuid

from asyncpg import Connection
from pydantic import ValidationError

from clarin_common.events import LeadData, LeadDeletedData
from clarin_common.ids import phone_digits
from clarin_common.nats import Delivery, PoisonMessage
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.deps import MessagingContext

LEAD_EVENT_TYPES = ("lead_created", "lead_updated", "lead_deleted")


def _uuid_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _lead_key(data: LeadData | LeadDeletedData) -> str:
    return data.lead_id if isinstance(data, LeadDeletedData) else data.lead.id


async def _lock_chats(
    conn: Connection, parsed: list[tuple[str, LeadData | LeadDeletedData]]
) -> None:
    accounts: set[str] = set()
    chat_ids: set[str] = set()
    phones: set[str] = set()
    lead_ids: set[str] = set()
    for account_id, data in parsed:
        accounts.add(account_id)
        lead_id = _uuid_or_none(_lead_key(data))
        if lead_id:
            lead_ids.add(lead_id)
        if isinstance(data, LeadData):
            chat_id = _uuid_or_none(data.lead.chat_id)
            if chat_id:
                chat_ids.add(chat_id)
            phone = phone_digits(data.lead.phone or "")
            if phone:
                phones.add(phone)
    await conn.execute(
        """
        SELECT 1 FROM chats
        WHERE account_id = ANY($1::uuid[])
          AND (id = ANY($2::uuid[]) OR phone = ANY($3::text[]) OR lead_id = ANY($4::uuid[]))
        ORDER BY id
        FOR UPDATE
        """,
        list(accounts),
        list(chat_ids),
        list(phones),
        list(lead_ids),
    )


async def handle_lead_events(ctx: MessagingContext, deliveries: list[Delivery]) -> None:
    parsed: list[tuple[str, LeadData | LeadDeletedData]] = []
    for delivery in deliveries:
        env = delivery.envelope
        kind = delivery.msg.subject.rsplit(".", 1)[-1]
        if kind not in LEAD_EVENT_TYPES:
            continue
        try:
            account_id = str(uuid.UUID(env.account_id))
            data: LeadData | LeadDeletedData = (
                LeadDeletedData.model_validate(env.data)
                if kind == "lead_deleted"
                else LeadData.model_validate(env.data)
            )
        except (ValueError, ValidationError) as exc:
            raise PoisonMessage(f"invalid {kind} event: {exc}") from exc
        parsed.append((account_id, data))

    # Per lead, one outcome for the batch: deleted wins, else the newest state.
    deleted: dict[str, str] = {}
    newest: dict[str, tuple[str, LeadData]] = {}
    for account_id, data in parsed:
        lead_id = _uuid_or_none(_lead_key(data))
        if lead_id is None:
            continue
        if isinstance(data, LeadDeletedData):
            deleted[lead_id] = account_id
        elif data.lead.account_id == account_id:
            seen = newest.get(lead_id)
            if seen is None or seen[1].lead.updated_at <= data.lead.updated_at:
                newest[lead_id] = (account_id, data)
    links = [
        (
            lead_id,
            account_id,
            _uuid_or_none(data.lead.chat_id),
            phone_digits(data.lead.phone or "") or None,
            data.lead.updated_at,
        )
        for lead_id, (account_id, data) in sorted(newest.items())
        if lead_id not in deleted
    ]
    # Lock order: the inbound batch upserts chats in id order; taking the chats this
    # batch may touch in that same order first keeps the two consumers (and
    # replicas) from deadlocking each other.
    async with ctx.db_turn, ctx.pool.acquire() as conn, conn.transaction():
        await _lock_chats(conn, parsed)
        await chats_repo.unlink_leads(conn, sorted(deleted.items()))
        fresh = await chats_repo.upsert_lead_links(conn, links)
        await chats_repo.link_leads(conn, fresh)
