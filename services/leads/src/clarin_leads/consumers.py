"""The durable JetStream consumer that turns inbound WhatsApp messages into leads."""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from nats.js import JetStreamContext
from pydantic import ValidationError

from clarin_common.events import WA_EVENTS_STREAM, LeadData, RawEnvelope, WaMessage
from clarin_common.ids import chat_id_for, normalize_jid, phone_from_jid
from clarin_common.nats import Delivery, PullConsumer
from clarin_common.outbox import Event, Outbox, app_event, stage_events
from clarin_leads.leads import repository
from clarin_leads.leads.repository import InboundContact
from clarin_leads.pipeline import repository as stages

log = structlog.get_logger(__name__)

DURABLE = "leads"
MESSAGE_SUBJECTS = ["wa.evt.*.*.message"]


def inbound_contact(env: RawEnvelope) -> InboundContact | None:
    """The contact an event is about, or None when it cannot make or touch a lead
    (outbound, group, broadcast or status post, no phone number known yet, not
    a message)."""
    if env.type != "message" or not env.device_id:
        return None
    try:
        message = WaMessage.model_validate(env.data)
        account_id = str(uuid.UUID(env.account_id))
    except (ValidationError, ValueError) as exc:
        log.error("lead_event_ignored_invalid", event_id=env.id, reason=str(exc)[:300])
        return None
    if message.direction != "in" or message.is_group:
        return None
    phone = phone_from_jid(message.chat_jid)
    if phone is None and normalize_jid(message.chat_jid).endswith("@lid") and message.sender_jid:
        # a chat addressed by LID whose sender the worker resolved to a number
        phone = phone_from_jid(message.sender_jid)
    if phone is None:
        # status posts, broadcasts, and contacts known only by LID so far: the
        # lead comes with the first message that tells the number
        return None
    return InboundContact(
        account_id=account_id,
        phone=phone,
        name=(message.push_name or "").strip()[:200] or phone,
        # the chat messaging keeps for this number (the phone form's id)
        chat_id=chat_id_for(env.device_id, f"{phone}@s.whatsapp.net"),
        contact_at=message.sent_at,
    )


def _latest_per_number(contacts: list[InboundContact]) -> list[InboundContact]:
    """One contact per (account, phone): the latest time, the first message's name
    and chat. Sorted, so concurrent batches lock rows in the same order."""
    merged: dict[tuple[str, str], InboundContact] = {}
    for contact in sorted(contacts, key=lambda c: c.contact_at):
        key = (contact.account_id, contact.phone)
        first = merged.get(key)
        if first is None:
            merged[key] = contact
        else:
            merged[key] = InboundContact(
                account_id=first.account_id,
                phone=first.phone,
                name=first.name,
                chat_id=first.chat_id,
                contact_at=contact.contact_at,
            )
    return [merged[k] for k in sorted(merged)]


class LeadsConsumer:
    """Creates the lead of a new number and keeps ``last_contact_at`` current.

    A batch is one transaction; its application events go out after commit.
    Idempotent: a redelivered (or republished) message finds the lead and at
    most moves ``last_contact_at`` forward.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        outbox: Outbox,
        batch_size: int = 500,
        contact_event_interval: float = 60.0,
    ) -> None:
        self.pool = pool
        self.outbox = outbox
        self.contact_event_interval = contact_event_interval
        self.consumer = PullConsumer(
            js,
            stream=WA_EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=MESSAGE_SUBJECTS,
            handler=self.handle,
            batch_size=batch_size,
        )

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def handle(self, deliveries: list[Delivery]) -> None:
        await self.handle_events([d.envelope for d in deliveries])

    async def handle_events(self, envelopes: list[RawEnvelope]) -> None:
        """One batch of message events, in one transaction (what ``handle`` does
        with a fetched batch before the consumer acks it)."""
        contacts = [c for env in envelopes if (c := inbound_contact(env)) is not None]
        if not contacts:
            return
        contacts = _latest_per_number(contacts)
        async with self.pool.acquire() as conn, conn.transaction():
            for account_id in sorted({c.account_id for c in contacts}):
                await stages.ensure_defaults_for_account(conn, account_id)
            changed = await repository.upsert_many_from_whatsapp(
                conn, contacts, self.contact_event_interval
            )
            items: list[Event] = []
            for change in changed:
                lead = change.lead
                if change.created:
                    items.append(app_event(lead.account_id, "lead_created", LeadData(lead=lead)))
                    log.info("lead_from_whatsapp", lead_id=lead.id, account_id=lead.account_id)
                elif change.announce:
                    items.append(app_event(lead.account_id, "lead_updated", LeadData(lead=lead)))
            events = await stage_events(conn, items)
        await self.outbox.publish(events)
