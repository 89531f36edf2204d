"""The web app in real Chromium against the running system and the simulator.

Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import sim
from tests.e2e.system import ARTIFACTS, System
from tests.webhook_receiver import Receiver, serving_in_thread, verified

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ARTIFACTS / "screenshots"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M/wHwAEBgIApD5fRAAAAABJRU5ErkJggg=="

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)


def sim_sync(
    system: System, device_id: str, action: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Simulator control over NATS, from this synchronous test (own thread, own loop)."""
    result: dict[str, Any] = {}

    def target() -> None:
        result.update(asyncio.run(sim(system.nats_url, device_id, action, payload)))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert result.get("ok"), result
    return result


def test_agent_journey(system: System) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    base = system.base_url
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def shot(name: str) -> None:
            page.screenshot(path=str(SHOTS / f"{name}.png"))

        # register (a 422 first, shown beside the field)
        page.goto(base + "/")
        expect(page.get_by_test_id("login-form")).to_be_visible()
        shot("01-login")
        page.get_by_test_id("to-register").click()
        page.get_by_test_id("register-account").fill("Café Olé S.L.")
        page.get_by_test_id("register-name").fill("Ana Núñez")
        page.get_by_test_id("register-email").fill(f"ana{time.time_ns()}@example.com")
        page.get_by_test_id("register-password").fill("short")
        page.get_by_test_id("register-submit").click()
        expect(page.get_by_test_id("register-password-error")).to_be_visible()
        shot("02-register-422")
        page.get_by_test_id("register-password").fill("secreto123")
        page.get_by_test_id("register-submit").click()
        expect(page.get_by_test_id("inbox-page")).to_be_visible()
        expect(page.get_by_test_id("ws-status")).to_have_attribute("data-status", "open")
        shot("03-inbox-empty")

        # add a device, see the QR, scan it through the simulator, see it connected
        page.get_by_test_id("nav-devices").click()
        page.get_by_test_id("add-device-button").click()
        page.get_by_test_id("device-name-input").fill("Ventas 🇪🇸")
        page.get_by_test_id("device-create-submit").click()
        card = page.get_by_test_id("device-card").first
        # "create" also connects: the card goes straight to pairing
        expect(card.get_by_test_id("device-qr")).to_be_visible(timeout=20_000)
        expect(card.get_by_test_id("device-status")).to_have_attribute("data-status", "qr_pending")
        shot("04-device-qr")
        device_id = card.get_attribute("data-device-id") or ""
        sim_sync(system, device_id, "scan", {"phone": "34600111222"})
        expect(card.get_by_test_id("device-status")).to_have_attribute(
            "data-status", "connected", timeout=20_000
        )
        shot("05-device-connected")

        # an inbound message appears live in the inbox
        page.get_by_test_id("nav-inbox").click()
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215512345678",
                "push_name": "José Peña 😀",
                "body": "¡Hola! ¿Tienen café de Oaxaca? ☕",
            },
        )
        item = page.get_by_test_id("chat-item").first
        expect(item).to_contain_text("José Peña")
        expect(item.get_by_test_id("chat-unread-badge")).to_have_text("1")
        shot("06-inbox-live")

        # open it, reply, watch the ticks move to read
        item.click()
        expect(page.get_by_test_id("message-bubble").first).to_contain_text("Oaxaca")
        expect(item.get_by_test_id("chat-unread-badge")).to_have_count(0)
        page.get_by_test_id("composer-input").fill("¡Claro! Te envío el catálogo 📄")
        page.get_by_test_id("composer-input").press("Enter")
        out = page.locator('[data-testid="message-bubble"][data-direction="out"]').last
        expect(out).to_be_visible()
        expect(out).to_have_attribute("data-status", "read", timeout=30_000)
        expect(page.locator('[data-testid="message-bubble"][data-direction="out"]')).to_have_count(
            1
        )
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215512345678",
                "push_name": "José Peña 😀",
                "type": "image",
                "media": {"mime_type": "image/png", "file_name": "foto.png", "data_base64": PNG},
            },
        )
        expect(page.get_by_test_id("message-image")).to_be_visible()
        expect(page.get_by_test_id("chat-lead-panel")).to_contain_text("José Peña")
        shot("07-thread")

        # the lead born from the chat: edit it (422 shown), then drag it to another stage
        page.get_by_test_id("chat-lead-link").click()
        expect(page.get_by_test_id("lead-detail")).to_be_visible()
        page.get_by_test_id("lead-email").fill("not-an-email")
        page.get_by_test_id("lead-submit").click()
        expect(page.get_by_test_id("lead-email-error")).to_be_visible()
        shot("08-lead-422")
        page.get_by_test_id("lead-email").fill("jose@example.mx")
        page.get_by_test_id("lead-tag-input").fill("mayorista")
        page.get_by_test_id("lead-tag-input").press("Enter")
        page.get_by_test_id("lead-notes").fill("Quiere 20 kg al mes.")
        page.get_by_test_id("lead-submit").click()
        expect(page.get_by_test_id("toast-success")).to_be_visible()

        page.get_by_test_id("nav-leads").click()
        expect(page.get_by_test_id("lead-row")).to_have_count(1)
        shot("09-leads-table")
        page.get_by_test_id("leads-view-kanban").click()
        lead_card = page.locator('[data-testid="lead-card"]').first
        expect(lead_card).to_have_attribute("data-stage", "new")
        lead_card.drag_to(page.locator('[data-testid="kanban-column"][data-stage="qualified"]'))
        expect(
            page.locator(
                '[data-testid="kanban-column"][data-stage="qualified"] [data-testid="lead-card"]'
            )
        ).to_have_count(1)
        shot("10-kanban")

        # users page: add an agent
        page.get_by_test_id("nav-users").click()
        page.get_by_test_id("user-name").fill("Luis Agente")
        agent_email = f"luis{time.time_ns()}@example.com"
        page.get_by_test_id("user-email").fill(agent_email)
        page.get_by_test_id("user-password").fill("agente123")
        page.get_by_test_id("user-submit").click()
        expect(page.get_by_test_id("user-row")).to_have_count(2)
        shot("11-users")

        # webhooks: create one with two event types, the secret shown once and copied,
        # signed deliveries (two refused, then retried), a redelivery, pause, delete
        with serving_in_thread(Receiver(plan=[500, 500])) as receiver:
            ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            page.get_by_test_id("nav-webhooks").click()
            expect(page.get_by_test_id("webhooks-empty")).to_be_visible()
            page.get_by_test_id("webhook-add").click()
            page.get_by_test_id("webhook-url").fill("ftp://nope")
            page.get_by_test_id("webhook-submit").click()
            expect(page.get_by_test_id("webhook-url-error")).to_be_visible()
            page.get_by_test_id("webhook-url").fill(receiver.url + "/clarin")
            page.get_by_test_id("webhook-event-all").uncheck()
            page.locator('[data-testid="webhook-event"][data-event="new_message"]').check()
            page.locator('[data-testid="webhook-event"][data-event="lead_created"]').check()
            shot("11a-webhook-form")
            page.get_by_test_id("webhook-submit").click()
            secret_box = page.get_by_test_id("webhook-secret")
            expect(secret_box).to_contain_text("whsec_")
            secret = secret_box.inner_text().strip()
            page.get_by_test_id("webhook-secret-copy").click()
            expect(page.get_by_test_id("webhook-secret-copy")).to_have_attribute(
                "data-copied", "true"
            )
            assert page.evaluate("navigator.clipboard.readText()") == secret
            shot("11b-webhook-secret")
            page.get_by_test_id("webhook-secret-done").click()
            expect(page.get_by_test_id("webhook-secret")).to_have_count(0)
            row = page.get_by_test_id("webhook-row")
            expect(row).to_have_count(1)

            # a message from a new number: new_message and lead_created go out
            sim_sync(
                system,
                device_id,
                "inbound",
                {"from": "5215500011122", "push_name": "Marta Gómez", "body": "¿Hacen envíos?"},
            )
            row.get_by_test_id("webhook-deliveries-toggle").click()
            delivered = row.locator('[data-testid="delivery-row"][data-status="delivered"]')
            expect(delivered).to_have_count(2, timeout=30_000)
            accepted = receiver.accepted()
            assert sorted(r.event_type for r in accepted) == ["lead_created", "new_message"]
            assert all(verified(r, secret) for r in receiver.requests)
            assert [r.status for r in receiver.requests].count(500) == 2
            shot("11c-webhook-deliveries")
            first_id = delivered.first.get_attribute("data-delivery-id")
            attempts = row.locator(
                f'[data-delivery-id="{first_id}"] [data-testid="delivery-attempts"]'
            )
            before = int(attempts.inner_text())
            delivered.first.get_by_test_id("delivery-redeliver").click()
            expect(page.get_by_test_id("toast-info")).to_be_visible()
            expect(attempts).to_have_text(str(before + 1), timeout=30_000)
            deadline = time.monotonic() + 30
            while len(receiver.accepted()) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert receiver.accepted()[-1].delivery_id == first_id

            row.get_by_test_id("webhook-active").click()
            expect(row).to_have_attribute("data-active", "false")
            expect(row.get_by_test_id("webhook-active")).to_have_attribute("aria-checked", "false")
            shot("11d-webhook-paused")
            row.get_by_test_id("webhook-delete").click()
            page.get_by_test_id("confirm-ok").click()
            expect(page.get_by_test_id("webhooks-empty")).to_be_visible()

        # an agent sees neither users nor webhooks in the navigation
        agent_ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        agent_page = agent_ctx.new_page()
        agent_page.goto(base + "/login")
        agent_page.get_by_test_id("login-email").fill(agent_email)
        agent_page.get_by_test_id("login-password").fill("agente123")
        agent_page.get_by_test_id("login-submit").click()
        expect(agent_page.get_by_test_id("inbox-page")).to_be_visible()
        expect(agent_page.get_by_test_id("nav-webhooks")).to_have_count(0)
        expect(agent_page.get_by_test_id("nav-users")).to_have_count(0)
        agent_page.goto(base + "/webhooks")
        expect(agent_page.get_by_test_id("webhooks-forbidden")).to_be_visible()
        agent_ctx.close()

        page.get_by_test_id("lang-switch").click()
        expect(page.get_by_test_id("nav-inbox")).to_have_text("Inbox")
        shot("12-english")
        page.get_by_test_id("lang-switch").click()

        # phone width
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/inbox")
        expect(page.get_by_test_id("chat-item").first).to_be_visible()
        shot("13-phone-inbox")
        page.get_by_test_id("chat-item").first.click()
        expect(page.get_by_test_id("composer-input")).to_be_visible()
        shot("14-phone-thread")
        page.goto(base + "/devices")
        shot("15-phone-devices")
        page.goto(base + "/leads?view=kanban")
        expect(page.get_by_test_id("lead-card").first).to_be_visible()
        shot("16-phone-kanban")

        page.get_by_test_id("logout-button-mobile").click()
        expect(page.get_by_test_id("login-form")).to_be_visible()
        browser.close()
    assert not errors, errors
