"""Contacts WhatsApp addresses by LID: the lead comes with the phone number."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from nats.aio.client import Client as NatsClient

from clarin_common.events import WaMessage, wa_envelope, wa_event_subject
from clarin_common.ids import chat_id_for
from clarin_common.nats import publish_event
from clarin_devkit.testing import eventually

DEVICE = "0b7c6a1e-5d2f-4f1e-9a3b-2c1d0e9f8a7b"  # the conftest default device
PHONE = "5215566667777"
PHONE_JID = f"{PHONE}@s.whatsapp.net"
LID_JID = "12345678901234@lid"


async def publish(
    nc: NatsClient, account_id: str, chat_jid: str, chat_lid: str | None, sender_jid: str
) -> None:
    message = WaMessage(
        wa_message_id=uuid.uuid4().hex[:20].upper(),
        chat_jid=chat_jid,
        chat_lid=chat_lid,
        sender_jid=sender_jid,
        sender_lid=chat_lid,
        push_name="Marta",
        direction="in",
        body="hola",
        sent_at=datetime.now(UTC),
    )
    env = wa_envelope(account_id, DEVICE, "message", message)
    await publish_event(nc.jetstream(), wa_event_subject(account_id, DEVICE, "message"), env)


async def leads_of(client: httpx.AsyncClient, tenant: Any) -> list[dict[str, Any]]:
    resp = await client.get("/api/leads", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def test_a_lid_contact_gets_one_lead_with_the_phone_once_known(
    client: httpx.AsyncClient, new_tenant: Callable[[], Any], wa: Any, nats_client: NatsClient
) -> None:
    tenant = new_tenant()
    # known only by LID: no number, so no lead yet
    await publish(nats_client, tenant.account_id, LID_JID, LID_JID, LID_JID)
    # a status post names a number but is no conversation
    await publish(nats_client, tenant.account_id, "status@broadcast", None, PHONE_JID)
    await wa.drained()
    assert await leads_of(client, tenant) == []

    # WhatsApp tells the number alongside the LID
    await publish(nats_client, tenant.account_id, PHONE_JID, LID_JID, PHONE_JID)
    leads = await eventually(lambda: leads_of(client, tenant))
    assert len(leads) == 1
    assert leads[0]["phone"] == PHONE and leads[0]["name"] == "Marta"
    assert leads[0]["chat_id"] == chat_id_for(DEVICE, PHONE_JID)

    # later: a LID chat whose sender the worker resolved, and the phone again
    await publish(nats_client, tenant.account_id, LID_JID, LID_JID, PHONE_JID)
    await publish(nats_client, tenant.account_id, PHONE_JID, LID_JID, PHONE_JID)
    await wa.drained()
    again = await leads_of(client, tenant)
    assert [x["id"] for x in again] == [leads[0]["id"]]
    assert again[0]["phone"] == PHONE


async def test_a_lid_chat_whose_sender_is_resolved_makes_the_lead(
    client: httpx.AsyncClient, new_tenant: Callable[[], Any], nats_client: NatsClient
) -> None:
    tenant = new_tenant()
    await publish(nats_client, tenant.account_id, LID_JID, LID_JID, PHONE_JID)
    leads = await eventually(lambda: leads_of(client, tenant))
    assert [x["phone"] for x in leads] == [PHONE]
    assert leads[0]["chat_id"] == chat_id_for(DEVICE, PHONE_JID)
