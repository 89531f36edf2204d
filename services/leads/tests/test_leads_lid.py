"""Contacts WhatsApp addresses by LID: the lead comes with the phone number."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from clarin_common.ids import chat_id_for
from clarin_devkit.testing import eventually
from services.leads.tests.helpers import DEVICE_ID, Tenant, WaPublisher, leads_of

PHONE = "5215566667777"
PHONE_JID = f"{PHONE}@s.whatsapp.net"
LID_JID = "12345678901234@lid"


async def publish(
    wa: WaPublisher, account_id: str, chat_jid: str, chat_lid: str | None, sender_jid: str
) -> None:
    await wa.message(
        account_id, chat_jid=chat_jid, chat_lid=chat_lid, sender_jid=sender_jid, push_name="Marta"
    )


async def test_a_lid_contact_gets_one_lead_with_the_phone_once_known(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    tenant = new_tenant()
    # known only by LID: no number, so no lead yet
    await publish(wa, tenant.account_id, LID_JID, LID_JID, LID_JID)
    # a status post names a number but is no conversation
    await publish(wa, tenant.account_id, "status@broadcast", None, PHONE_JID)
    await wa.drained()
    assert await leads_of(client, tenant) == []

    # WhatsApp tells the number alongside the LID
    await publish(wa, tenant.account_id, PHONE_JID, LID_JID, PHONE_JID)
    leads = await eventually(lambda: leads_of(client, tenant))
    assert len(leads) == 1
    assert leads[0]["phone"] == PHONE and leads[0]["name"] == "Marta"
    assert leads[0]["chat_id"] == chat_id_for(DEVICE_ID, PHONE_JID)

    # later: a LID chat whose sender the worker resolved, and the phone again
    await publish(wa, tenant.account_id, LID_JID, LID_JID, PHONE_JID)
    await publish(wa, tenant.account_id, PHONE_JID, LID_JID, PHONE_JID)
    await wa.drained()
    again = await leads_of(client, tenant)
    assert [x["id"] for x in again] == [leads[0]["id"]]
    assert again[0]["phone"] == PHONE


async def test_a_lid_chat_whose_sender_is_resolved_makes_the_lead(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    tenant = new_tenant()
    await publish(wa, tenant.account_id, LID_JID, LID_JID, PHONE_JID)
    leads = await eventually(lambda: leads_of(client, tenant))
    assert [x["phone"] for x in leads] == [PHONE]
    assert leads[0]["chat_id"] == chat_id_for(DEVICE_ID, PHONE_JID)
