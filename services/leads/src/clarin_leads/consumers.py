"""The durable JetStream consumer that turns inbound WhatsApp messages into leads."""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from asyncpg.exceptions import DeadlockDetectedError, SerializationError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clarin_common.events import WA_EVENTS_STREAM, LeadData, RawEnvelope
from clarin_common.ids import chat_id_for, normalize_jid, phone_from_jid
from clarin_common.nats import Delivery, PullConsumer
from clarin_common.outbox import Event, Outbox, app_event, stage_events
from clarin_leads.leads import repository
from clarin_leads.leads.repository import InboundContact
from clarin_leads.pipeline import repository as stages

log = structlog.get_logger(__name__)

DURABLE = "leads"
MESSAGE_SUBJECTS = ["wa.evt.*.*.message"]


class LeadMessage(BaseModel):
    """The fields of a ``WaMessage`` a lead is made of (the body, media and the
    rest are skipped by the JSON parser, never turned into Python objects)."""

    model_config = ConfigDict(extra="ignore")
    wa_message_id: str
    chat_jid: str
    sender_jid: str | None = None
    push_name: str | None = None
    direction: Literal["in", "out"]
    is_group: bool = False
    sent_at: datetime


class LeadEnvelope(BaseModel):
    """A ``wa.evt`` envelope as ``RawEnvelope`` checks it, with the message read
    as a :class:`LeadMessage` when it is one (else the payload stays a dict: an
    envelope that is valid but whose message is not is ignored, not poison)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    type: str
    account_id: str
    device_id: str | None = None
    occurred_at: datetime
    data: Annotated[LeadMessage | dict[str, Any], Field(union_mode="left_to_right")]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One inbound message from a phone number: what its lead needs."""

    account_id: str
    device_id: str
    phone: str
    name: str
    contact_at: datetime


@functools.lru_cache(maxsize=4096)
def _canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def _chat_id(device_id: str, phone: str) -> str:
    """The chat messaging keeps for this number on this device (the phone form's
    id): a uuid5 per contact of every batch showed in the profile, hence the cache."""
    return chat_id_for(device_id, f"{phone}@s.whatsapp.net")


def inbound_message(
    event_id: str, account_id: str, device_id: str | None, message: LeadMessage
) -> InboundMessage | None:
    """The contact a message is about, or None when it cannot make or touch a lead
    (outbound, group, broadcast or status post, no phone number known yet)."""
    if not device_id or message.direction != "in" or message.is_group:
        return None
    account = _canonical_uuid(account_id)
    if account is None:
        log.error("lead_event_ignored_invalid", event_id=event_id, reason="account_id")
        return None
    phone = phone_from_jid(message.chat_jid)
    if phone is None and normalize_jid(message.chat_jid).endswith("@lid") and message.sender_jid:
        # a chat addressed by LID whose sender the worker resolved to a number
        phone = phone_from_jid(message.sender_jid)
    if phone is None:
        # status posts, broadcasts, and contacts known only by LID so far: the
        # lead comes with the first message that tells the number
        return None
    return InboundMessage(
        account_id=account,
        device_id=device_id,
        phone=phone,
        name=(message.push_name or "").strip()[:200] or phone,
        contact_at=message.sent_at,
    )


def inbound_contact(env: RawEnvelope) -> InboundMessage | None:
    """:func:`inbound_message` of an already parsed envelope."""
    if env.type != "message":
        return None
    try:
        message = LeadMessage.model_validate(env.data)
    except ValidationError as exc:
        log.error("lead_event_ignored_invalid", event_id=env.id, reason=str(exc)[:300])
        return None
    return inbound_message(env.id, env.account_id, env.device_id, message)


def _latest_per_number(messages: list[InboundMessage]) -> list[InboundContact]:
    """One contact per (account, phone): the latest time, the first message's name
    and chat. Sorted, so concurrent batches lock rows in the same order."""
    first: dict[tuple[str, str], InboundMessage] = {}
    latest: dict[tuple[str, str], datetime] = {}
    for message in messages:
        key = (message.account_id, message.phone)
        seen = first.get(key)
        if seen is None:
            first[key] = message
            latest[key] = message.contact_at
            continue
        if message.contact_at < seen.contact_at:
            first[key] = message
        if message.contact_at > latest[key]:
            latest[key] = message.contact_at
    return [
        InboundContact(
            account_id=m.account_id,
            phone=m.phone,
            name=m.name,
            chat_id=_chat_id(m.device_id, m.phone),
            contact_at=latest[key],
        )
        for key, m in sorted(first.items())
    ]


@dataclass(slots=True)
class _Fetched:
    msg: Msg
    event_id: str
    # None: valid, but nothing a lead is made of (acked with the batch)
    inbound: InboundMessage | None


class _MessagePullConsumer(PullConsumer):
    """The common pull consumer with a lighter path for ``wa.evt.*.*.message``.

    The common one builds a ``RawEnvelope`` (the whole payload as Python objects)
    and a ``Delivery`` per message, the handler then validates the message again,
    and the acks go out as one task each: on a 2-core host shared with messaging
    that per-message work was most of this consumer's CPU. Here the JSON is parsed
    once, by pydantic-core, into the few fields a lead needs, and the batch goes
    to ``on_batch``. What the common one guarantees holds (``_commit`` and
    ``_settle`` do what its ``_handle_batch`` and ``_settle_failure`` do): what
    is not ours is acked, what does not parse or does not belong to its subject
    is terminated, the batch is acked
    only after ``on_batch`` committed, a deadlock is retried, and a failing batch
    is retried one by one.
    """

    def __init__(
        self,
        js: JetStreamContext,
        on_batch: Callable[[list[InboundMessage]], Awaitable[None]],
        batch_size: int,
    ) -> None:
        super().__init__(
            js,
            stream=WA_EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=MESSAGE_SUBJECTS,
            handler=self._handle_deliveries,
            batch_size=batch_size,
        )
        self.on_batch = on_batch

    def _read(self, msg: Msg, account_id: str, device_id: str) -> _Fetched | dict[str, str]:
        """The message's part of a lead, or (for the log) why it is poison."""
        try:
            env = LeadEnvelope.model_validate_json(msg.data)
        except ValidationError as exc:
            return {"event": "poison_message_terminated", "reason": str(exc)[:500]}
        # a publisher allowed on one subject cannot speak for another tenant
        for field, value, expected in (
            ("account", env.account_id, account_id),
            ("device", env.device_id, device_id),
            ("type", env.type, "message"),
        ):
            if value != expected:
                return {
                    "event": "event_subject_mismatch_terminated",
                    "event_id": env.id,
                    "field": field,
                }
        if not isinstance(env.data, LeadMessage):
            log.error("lead_event_ignored_invalid", event_id=env.id, reason="not a message")
            return _Fetched(msg, env.id, None)
        inbound = inbound_message(env.id, env.account_id, env.device_id, env.data)
        return _Fetched(msg, env.id, inbound)

    async def process(self, msgs: list[Msg]) -> None:
        batch: list[_Fetched] = []
        for msg in msgs:
            parts = msg.subject.split(".")
            if len(parts) != 5 or parts[:2] != ["wa", "evt"] or parts[4] != "message":
                # a server that ignored our filter (before 2.10): not ours
                await msg.ack()
                continue
            read = self._read(msg, parts[2], parts[3])
            if isinstance(read, dict):
                log.error(durable=self.durable, subject=msg.subject, **read)
                await msg.term()
                continue
            batch.append(read)
        if not batch:
            return
        try:
            await self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                await self._settle(batch[0], exc)
                return
            log.warning(
                "batch_failed_retrying_one_by_one", durable=self.durable, error=str(exc)[:300]
            )
            for one in batch:
                try:
                    await self.on_batch([one.inbound] if one.inbound else [])
                except Exception as one_exc:
                    await self._settle(one, one_exc)
                else:
                    await one.msg.ack()
            return
        # one after the other: an ack only queues a few bytes for the flusher,
        # and a task per ack (gather) cost more than the ack itself
        for one in batch:
            await one.msg.ack()

    async def _commit(self, batch: list[_Fetched]) -> None:
        """``on_batch`` on the whole batch; a deadlock or serialization failure is
        retried as a batch (with jitter) before falling back to one by one."""
        inbound = [one.inbound for one in batch if one.inbound is not None]
        for attempt in range(3):
            try:
                await self.on_batch(inbound)
                return
            except (DeadlockDetectedError, SerializationError) as exc:
                if attempt == 2:
                    raise
                log.warning("batch_conflict_retrying", durable=self.durable, error=str(exc)[:200])
                await asyncio.sleep(random.uniform(0.05, 0.3) * (attempt + 1))

    async def _settle(self, one: _Fetched, exc: Exception) -> None:
        try:
            attempts = int(one.msg.metadata.num_delivered)
        except Exception:
            attempts = 1
        if attempts >= self.max_attempts:
            log.error(
                "poison_message_terminated",
                durable=self.durable,
                subject=one.msg.subject,
                event_id=one.event_id,
                attempts=attempts,
                reason=str(exc)[:500],
            )
            await one.msg.term()
        else:
            log.warning(
                "message_failed_will_retry",
                durable=self.durable,
                event_id=one.event_id,
                attempts=attempts,
                error=str(exc)[:300],
            )
            await one.msg.nak(delay=min(2.0**attempts, 30.0))

    async def _handle_deliveries(self, deliveries: list[Delivery]) -> None:
        """The common path (unused: ``process`` is ours): events parsed as
        ``RawEnvelope``."""
        await self.on_batch([m for d in deliveries if (m := inbound_contact(d.envelope))])


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
        self.consumer = _MessagePullConsumer(js, self.handle_messages, batch_size)

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def handle_events(self, envelopes: list[RawEnvelope]) -> None:
        """One batch of message events, in one transaction (what the consumer does
        with a fetched batch before it acks it)."""
        await self.handle_messages(
            [m for env in envelopes if (m := inbound_contact(env)) is not None]
        )

    async def handle_messages(self, messages: list[InboundMessage]) -> None:
        """One transaction for the batch: the leads of new numbers, the
        ``last_contact_at`` of known ones, the events worth sending (outbox)."""
        if not messages:
            return
        contacts = _latest_per_number(messages)
        async with self.pool.acquire() as conn, conn.transaction():
            await stages.ensure_defaults_for_accounts(conn, [c.account_id for c in contacts])
            changed = await repository.touch_many_from_whatsapp(
                conn, contacts, self.contact_event_interval
            )
            items: list[Event] = [
                app_event(
                    change.lead.account_id,
                    "lead_created" if change.created else "lead_updated",
                    LeadData(lead=change.lead),
                )
                for change in changed
            ]
            events = await stage_events(conn, items)
        await self.outbox.publish(events)
        created = sum(1 for change in changed if change.created)
        if created:
            # one line per batch, not per lead: a first import makes thousands
            # (each one's id is in its lead_created event)
            log.info("leads_from_whatsapp", created=created, messages=len(messages))
