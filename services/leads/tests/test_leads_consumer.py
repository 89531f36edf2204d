"""Leads born from WhatsApp: the durable consumer of wa.evt.*.*.message."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from nats.aio.client import Client as NatsClient

from clarin_common.app import service_context
from clarin_common.events import RawEnvelope, WaMessage, wa_envelope
from clarin_common.ids import chat_id_for
from clarin_devkit.testing import eventually, running_app
from clarin_leads.deps import LeadsContext
from clarin_leads.main import create_app
from clarin_leads.settings import LeadsSettings
from services.leads.tests.helpers import (
    DEVICE_ID as DEVICE,
)
from services.leads.tests.helpers import (
    PHONE,
    AppEventsFeed,
    Tenant,
    WaPublisher,
    leads_of,
)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_first_inbound_message_creates_a_lead(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    sent_at = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    await wa.message(tenant.account_id, phone=PHONE, push_name="Ana", sent_at=sent_at)

    leads = await eventually(lambda: leads_of(client, tenant))
    assert len(leads) == 1
    lead = leads[0]
    assert lead["name"] == "Ana"
    assert lead["phone"] == PHONE
    assert lead["source"] == "whatsapp"
    assert lead["stage"] == "new"
    assert lead["tags"] == []
    assert lead["chat_id"] == chat_id_for(DEVICE, f"{PHONE}@s.whatsapp.net")
    assert when(lead["last_contact_at"]) == sent_at

    await eventually(lambda: events.of_type("lead_created"))
    created = events.of_type("lead_created")
    assert len(created) == 1
    assert created[0]["data"]["lead"] == lead
    # visible in the stage filter, and the API refuses a manual duplicate
    assert [x["id"] for x in await leads_of(client, tenant, "?stage=new")] == [lead["id"]]
    dup = await client.post(
        "/api/leads", json={"name": "Dup", "phone": PHONE}, headers=tenant.headers
    )
    assert dup.status_code == 409


async def test_name_falls_back_to_the_phone(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    tenant = new_tenant()
    await wa.message(tenant.account_id, phone=PHONE, push_name=None)
    await wa.message(tenant.account_id, phone="5491122334455", push_name="   ")
    await wa.drained()
    leads = await leads_of(client, tenant)
    assert sorted(x["name"] for x in leads) == sorted([PHONE, "5491122334455"])


async def test_later_messages_only_move_last_contact_forward(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    await wa.message(tenant.account_id, phone=PHONE, push_name="Ana", sent_at=t0)
    await wa.drained()
    [lead] = await leads_of(client, tenant)
    # the team works the lead…
    moved = await client.put(
        f"/api/leads/{lead['id']}",
        json={"stage": "qualified", "name": "Ana (Acme)"},
        headers=tenant.headers,
    )
    assert moved.status_code == 200
    events = await app_events(tenant.account_id)

    # …then she writes again, with another push name, later
    t1 = t0 + timedelta(hours=1)
    await wa.message(tenant.account_id, phone=PHONE, push_name="Ana María", sent_at=t1)
    await wa.drained()
    [after] = await leads_of(client, tenant)
    assert after["id"] == lead["id"]
    assert after["name"] == "Ana (Acme)" and after["stage"] == "qualified"
    assert when(after["last_contact_at"]) == t1
    await eventually(lambda: events.of_type("lead_updated"))
    assert events.of_type("lead_updated")[-1]["data"]["lead"] == after

    # an older message (history, late delivery) never moves it back
    await wa.message(tenant.account_id, phone=PHONE, sent_at=t0 - timedelta(days=1))
    await wa.drained()
    [still] = await leads_of(client, tenant)
    assert when(still["last_contact_at"]) == t1
    assert not events.of_type("lead_created")


async def test_a_busy_chat_announces_last_contact_at_most_once_a_minute(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    await wa.message(tenant.account_id, phone=PHONE, push_name="Ana", sent_at=t0)
    await wa.drained()
    await eventually(lambda: events.of_type("lead_created"))
    # three more messages within the minute: stored, not announced
    for seconds in (10, 20, 30):
        await wa.message(
            tenant.account_id, phone=PHONE, push_name="Ana", sent_at=t0 + timedelta(seconds=seconds)
        )
        await wa.drained()
    [lead] = await leads_of(client, tenant)
    assert when(lead["last_contact_at"]) == t0 + timedelta(seconds=30)
    # a chat that keeps writing every 30 s is announced once a minute
    for seconds in (60, 90, 120):
        await wa.message(
            tenant.account_id, phone=PHONE, push_name="Ana", sent_at=t0 + timedelta(seconds=seconds)
        )
        await wa.drained()
    # a later event (another number's lead) shows everything before it was announced
    await wa.message(tenant.account_id, phone="5215500000009", push_name="Later")
    await eventually(lambda: events.of_type("lead_created")[1:])
    announced = [when(e["data"]["lead"]["last_contact_at"]) for e in events.of_type("lead_updated")]
    assert announced == [t0 + timedelta(seconds=60), t0 + timedelta(seconds=120)]


async def test_manual_lead_with_the_number_gets_linked(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    tenant = new_tenant()
    resp = await client.post(
        "/api/leads", json={"name": "Ana", "phone": "+52 1 55 1234 5678"}, headers=tenant.headers
    )
    manual = resp.json()
    sent_at = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    await wa.message(tenant.account_id, phone=PHONE, push_name="Otra", sent_at=sent_at)
    await wa.drained()
    [lead] = await leads_of(client, tenant)
    assert lead["id"] == manual["id"]
    assert lead["source"] == "manual" and lead["name"] == "Ana"
    assert lead["chat_id"] == chat_id_for(DEVICE, f"{PHONE}@s.whatsapp.net")
    assert when(lead["last_contact_at"]) == sent_at


async def test_groups_outbound_and_non_phone_chats_create_nothing(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    await wa.message(tenant.account_id, phone="5215500000001", direction="out")
    await wa.message(
        tenant.account_id,
        phone="5215500000002",
        chat_jid="120363012345678901@g.us",
        is_group=True,
    )
    # a group flagged only by its JID, a broadcast and a hidden-number chat
    await wa.message(tenant.account_id, chat_jid="120363099999999999@g.us")
    await wa.message(tenant.account_id, chat_jid="status@broadcast")
    await wa.message(tenant.account_id, chat_jid="123456789012345@lid")
    # the sentinel: processed after the others
    await wa.message(tenant.account_id, phone="5215500000009", push_name="Sentinel")
    await wa.drained()
    leads = await leads_of(client, tenant)
    assert [x["name"] for x in leads] == ["Sentinel"]
    await eventually(lambda: events.of_type("lead_created"))
    assert len(events.frames) == 1


async def test_same_number_in_two_accounts_is_two_leads(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    first, second = new_tenant(), new_tenant()
    await wa.message(first.account_id, phone=PHONE)
    await wa.message(second.account_id, phone=PHONE)
    await wa.drained()
    assert len(await leads_of(client, first)) == 1
    assert len(await leads_of(client, second)) == 1


async def test_redelivered_and_republished_events_make_one_lead(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    latest = t0 + timedelta(minutes=5)
    event_id = await wa.message(tenant.account_id, phone=PHONE, sent_at=latest)
    await wa.message(tenant.account_id, phone=PHONE, sent_at=latest, event_id=event_id)
    # the same WhatsApp message republished under new event ids, older first
    await wa.message(tenant.account_id, phone=PHONE, sent_at=t0)
    await wa.message(tenant.account_id, phone=PHONE, sent_at=latest)
    await wa.drained()
    leads = await leads_of(client, tenant)
    assert len(leads) == 1
    assert when(leads[0]["last_contact_at"]) == latest
    await eventually(lambda: events.of_type("lead_created"))
    assert len(events.of_type("lead_created")) == 1


def _event(account_id: str, phone: str, sent_at: datetime, name: str = "Ana") -> RawEnvelope:
    data = WaMessage(
        wa_message_id=uuid.uuid4().hex,
        chat_jid=f"{phone}@s.whatsapp.net",
        push_name=name,
        direction="in",
        sent_at=sent_at,
    )
    env = wa_envelope(account_id, DEVICE, "message", data)
    return RawEnvelope.model_validate(json.loads(env.model_dump_json()))


async def test_handler_is_idempotent_and_safe_in_parallel(
    settings_for: Callable[..., LeadsSettings],
    clean_state: None,
    new_tenant: Callable[[], Tenant],
) -> None:
    """Two consumers (two replicas) handling messages of the same new numbers at the
    same moment, each batch in its own transaction: one lead per number."""
    tenant = new_tenant()
    app = create_app(settings_for())
    async with running_app(app) as client:
        consumer = service_context(app, LeadsContext).consumer
        t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
        phones = [f"52155000001{i:02d}" for i in range(10)]
        batches = [
            [_event(tenant.account_id, p, t0 + timedelta(seconds=k)) for p in phones]
            for k in range(4)
        ]
        await asyncio.gather(*(consumer.handle_events(batch) for batch in batches))
        # the very same deliveries again (a redelivery after a lost ack)
        await asyncio.gather(*(consumer.handle_events(batch) for batch in batches))
        leads = await leads_of(client, tenant, "?limit=200")
        assert sorted(x["phone"] for x in leads) == sorted(phones)
        for lead in leads:
            assert when(lead["last_contact_at"]) == t0 + timedelta(seconds=3)


async def test_two_messages_at_once_from_a_new_number_two_replicas(
    settings_for: Callable[..., LeadsSettings],
    clean_state: None,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    nats_client: NatsClient,
    app_events: AppEventsFeed,
) -> None:
    """End to end: two service replicas share the durable consumer, messages of
    the same new numbers arrive together."""
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    app_a, app_b = create_app(settings_for()), create_app(settings_for(consumer_batch_size=1))
    async with running_app(app_a) as client, running_app(app_b):
        phones = [f"54911000000{i:02d}" for i in range(5)]
        await asyncio.gather(
            *(wa.message(tenant.account_id, phone=p) for p in phones for _ in range(2))
        )
        await wa.drained()
        leads = await leads_of(client, tenant)
        assert sorted(x["phone"] for x in leads) == sorted(phones)
        await eventually(lambda: len(events.of_type("lead_created")) >= 5)
        created = events.of_type("lead_created")
        assert sorted(e["data"]["lead"]["phone"] for e in created) == sorted(phones)


async def test_invalid_event_does_not_block_the_stream(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    nats_client: NatsClient,
) -> None:
    tenant = new_tenant()
    js = nats_client.jetstream()
    subject = f"wa.evt.{tenant.account_id}.{DEVICE}.message"
    await js.publish(subject, b"not json")
    bad = {
        "id": str(uuid.uuid4()),
        "type": "message",
        "account_id": tenant.account_id,
        "device_id": DEVICE,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"chat_jid": "x"},  # no direction, no sent_at
    }
    await js.publish(subject, json.dumps(bad).encode())
    await wa.message(tenant.account_id, phone=PHONE, push_name="Después")
    await wa.drained()
    assert [x["name"] for x in await leads_of(client, tenant)] == ["Después"]


async def test_consumer_created_lead_is_deletable_and_recreated_by_a_new_message(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    tenant = new_tenant()
    await wa.message(tenant.account_id, phone=PHONE)
    await wa.drained()
    [lead] = await leads_of(client, tenant)
    events = await app_events(tenant.account_id)
    assert (
        await client.delete(f"/api/leads/{lead['id']}", headers=tenant.headers)
    ).status_code == 204
    await wa.message(tenant.account_id, phone=PHONE)
    await wa.drained()
    [again] = await leads_of(client, tenant)
    assert again["id"] != lead["id"]
    await eventually(lambda: events.of_type("lead_created"))
    assert [f["type"] for f in events.frames] == ["lead_deleted", "lead_created"]


async def test_an_event_whose_account_is_not_its_subjects_makes_no_lead(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    """A publisher allowed on one tenant's subject cannot write into another tenant."""
    victim, attacker = new_tenant(), new_tenant()
    forged = wa_envelope(
        victim.account_id,
        DEVICE,
        "message",
        WaMessage(
            wa_message_id="FORGED1",
            chat_jid=f"{PHONE}@s.whatsapp.net",
            sender_jid=f"{PHONE}@s.whatsapp.net",
            push_name="Forged",
            direction="in",
            body="hola",
            sent_at=datetime.now(UTC),
        ),
    )
    # the subject names the attacker's account, the payload the victim's
    await wa.publish(f"wa.evt.{attacker.account_id}.{DEVICE}.message", forged)
    other_device = wa_envelope(victim.account_id, DEVICE, "message", forged.data)
    await wa.publish(f"wa.evt.{victim.account_id}.{uuid.uuid4()}.message", other_device)
    # a genuine message after them is handled: the consumer went past both
    await wa.message(victim.account_id, phone="34600111222", push_name="Genuine")
    await wa.drained()
    victim_leads = await leads_of(client, victim)
    assert [lead["name"] for lead in victim_leads] == ["Genuine"]
    assert await leads_of(client, attacker) == []


async def test_a_burst_from_a_new_number_makes_one_lead(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    wa: WaPublisher,
    app_events: AppEventsFeed,
) -> None:
    """Thirty messages of a new number, however the consumer's batches cut them:
    one lead, named after the first message, last contact at the latest one, one
    lead_created and nothing else (all within the announce interval)."""
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    await asyncio.gather(
        *(
            wa.message(
                tenant.account_id,
                phone=PHONE,
                push_name=f"Ana {k}",
                sent_at=t0 + timedelta(seconds=k),
            )
            for k in range(30)
        )
    )
    await wa.drained()
    [lead] = await leads_of(client, tenant)
    assert lead["name"].startswith("Ana ")
    assert when(lead["last_contact_at"]) == t0 + timedelta(seconds=29)
    # a later event shows everything before it was published
    await wa.message(tenant.account_id, phone="5215500000009", push_name="Later")
    await eventually(lambda: events.of_type("lead_created")[1:])
    assert [e["data"]["lead"]["name"] for e in events.of_type("lead_created")] == [
        lead["name"],
        "Later",
    ]
    assert events.of_type("lead_updated") == []


async def test_one_batch_out_of_order_takes_the_first_message_s_name(
    settings_for: Callable[..., LeadsSettings],
    clean_state: None,
    new_tenant: Callable[[], Tenant],
) -> None:
    """Within one batch, the lead of a new number is named after its earliest
    message, whatever the order the batch holds them in."""
    tenant = new_tenant()
    app = create_app(settings_for())
    async with running_app(app) as client:
        consumer = service_context(app, LeadsContext).consumer
        t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
        batch = [
            _event(tenant.account_id, PHONE, t0 + timedelta(seconds=k), name=f"Ana {k}")
            for k in (5, 2, 0, 9, 1)
        ]
        await consumer.handle_events(batch)
        [lead] = await leads_of(client, tenant)
        assert lead["name"] == "Ana 0"
        assert when(lead["last_contact_at"]) == t0 + timedelta(seconds=9)


async def test_one_batch_of_many_numbers_and_accounts(
    settings_for: Callable[..., LeadsSettings],
    clean_state: None,
    new_tenant: Callable[[], Tenant],
) -> None:
    """One handled batch: each (account, phone) gets its lead (the same number in
    two accounts is two leads), each account its stages, known leads move forward."""
    first, second = new_tenant(), new_tenant()
    app = create_app(settings_for())
    async with running_app(app) as client:
        consumer = service_context(app, LeadsContext).consumer
        t0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
        phones = [f"5215500002{i:03d}" for i in range(40)]
        batch = [
            _event(tenant.account_id, p, t0 + timedelta(seconds=k))
            for tenant in (first, second)
            for p in phones
            for k in range(3)
        ]
        await consumer.handle_events(batch)
        for tenant in (first, second):
            leads = await leads_of(client, tenant, "?limit=200")
            assert sorted(x["phone"] for x in leads) == phones
            assert {when(x["last_contact_at"]) for x in leads} == {t0 + timedelta(seconds=2)}
            stages = await client.get("/api/pipeline/stages", headers=tenant.headers)
            assert "new" in {s["key"] for s in stages.json()["items"]}
        # the next batch only moves the known leads forward
        later = [_event(first.account_id, p, t0 + timedelta(minutes=5)) for p in phones[:5]]
        await consumer.handle_events(later)
        leads = await leads_of(client, first, "?limit=200")
        moved = {
            x["phone"] for x in leads if when(x["last_contact_at"]) > t0 + timedelta(seconds=2)
        }
        assert moved == set(phones[:5])
        assert len(leads) == len(phones)


async def test_a_lead_whose_number_changed_gives_way_to_a_new_lead(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], wa: WaPublisher
) -> None:
    """The team moves a WhatsApp lead to another number: the next message from the
    old number makes a new lead, the moved one keeps its number."""
    tenant = new_tenant()
    await wa.message(tenant.account_id, phone=PHONE, push_name="Ana")
    await wa.drained()
    [lead] = await leads_of(client, tenant)
    resp = await client.put(
        f"/api/leads/{lead['id']}", json={"phone": "5491122334455"}, headers=tenant.headers
    )
    assert resp.status_code == 200
    await wa.message(tenant.account_id, phone=PHONE, push_name="Otra")
    await wa.drained()
    leads = {x["phone"]: x for x in await leads_of(client, tenant)}
    assert set(leads) == {PHONE, "5491122334455"}
    assert leads["5491122334455"]["id"] == lead["id"]
    assert leads[PHONE]["name"] == "Otra"
