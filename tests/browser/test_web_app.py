"""The web app in real Chromium against the running system and the simulator.

Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from tests.e2e.helpers import sim
from tests.e2e.system import ARTIFACTS, System
from tests.webhook_receiver import Receiver, serving_in_thread, verified

if TYPE_CHECKING:  # playwright is imported where a test runs it
    from playwright.sync_api import ConsoleMessage, Page

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

CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI);
});
"""


def _csp_error(message: ConsoleMessage, errors: list[str]) -> None:
    text = message.text
    if message.type == "error" and ("CSP violation" in text or "Content Security Policy" in text):
        errors.append(text)


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


def holding_worker(system: System, device_id: str) -> str:
    """The System's name of the worker process that holds ``device_id`` (from the
    devices table), read in a thread of its own as :func:`sim_sync` does."""
    result: dict[str, str | None] = {}

    async def read() -> None:
        conn = await asyncpg.connect(system.env["CLARIN_DATABASE_URL"])
        try:
            result["worker"] = await conn.fetchval(
                "SELECT worker_id FROM devices.devices WHERE id = $1", uuid.UUID(device_id)
            )
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(read()))
    thread.start()
    thread.join(30)
    worker = result.get("worker") or ""
    assert worker.startswith("e2e-worker-"), result
    return "worker" + worker.removeprefix("e2e-worker-")


def test_agent_journey(system: System) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    base = system.base_url
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        # a Content-Security-Policy violation is logged as an error the test sees
        ctx.add_init_script(CSP_WATCH)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: _csp_error(m, errors))

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

        # a photo whose download fails, and a video too large to fetch: the
        # messages are there, saying so; the photo comes with a retry
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215512345678",
                "push_name": "José Peña 😀",
                "body": "El recibo 🧾",
                "media": {
                    "mime_type": "image/png",
                    "file_name": "recibo.png",
                    "data_base64": PNG,
                    "fail": 1,
                },
            },
        )
        failed = page.get_by_test_id("message-media-failed")
        expect(failed).to_be_visible()
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215512345678",
                "push_name": "José Peña 😀",
                "media": {
                    "mime_type": "video/mp4",
                    "file_name": "boda.mp4",
                    "data_base64": PNG,
                    "size": 200 * 1024 * 1024,
                },
            },
        )
        expect(page.get_by_test_id("message-media-too-large")).to_contain_text("boda.mp4")
        shot("07b-media-failed-too-large")
        failed.get_by_test_id("message-media-retry").click()
        expect(page.get_by_test_id("message-media-failed")).to_have_count(0)
        expect(page.get_by_test_id("message-image")).to_have_count(2)
        shot("07c-media-retried")

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
        luis_email = f"luis{time.time_ns()}@example.com"
        page.get_by_test_id("user-name").fill("Luis Agente")
        page.get_by_test_id("user-email").fill(luis_email)
        page.get_by_test_id("user-password").fill("agente123")
        page.get_by_test_id("user-submit").click()
        expect(page.get_by_test_id("user-row")).to_have_count(2)
        shot("11-users")

        # the agent's own view (another browser): no admin actions anywhere
        agent_ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        agent_ctx.add_init_script(CSP_WATCH)
        agent = agent_ctx.new_page()
        agent.set_default_timeout(15_000)
        agent.on("pageerror", lambda e: errors.append(str(e)))
        agent.on("console", lambda m: _csp_error(m, errors))
        agent.goto(base + "/")
        agent.get_by_test_id("login-email").fill(luis_email)
        agent.get_by_test_id("login-password").fill("agente123")
        agent.get_by_test_id("login-submit").click()
        expect(agent.get_by_test_id("inbox-page")).to_be_visible()
        expect(agent.get_by_test_id("ws-status")).to_have_attribute("data-status", "open")
        # his users page: the team, no actions on them, his own password
        agent.get_by_test_id("nav-users").click()
        expect(agent.get_by_test_id("user-row")).to_have_count(2)
        expect(agent.get_by_test_id("user-form")).to_have_count(0)
        expect(agent.get_by_test_id("user-remove")).to_have_count(0)
        expect(agent.get_by_test_id("user-role-select")).to_have_count(0)
        agent.get_by_test_id("password-current").fill("not my password")
        agent.get_by_test_id("password-new").fill("agente456")
        agent.get_by_test_id("password-submit").click()
        expect(agent.get_by_test_id("password-current-error")).to_be_visible()
        agent.screenshot(path=str(SHOTS / "11b-agent-password-422.png"))
        agent.get_by_test_id("password-current").fill("agente123")
        agent.get_by_test_id("password-submit").click()
        expect(agent.get_by_test_id("toast-success")).to_be_visible()
        expect(agent.get_by_test_id("ws-status")).to_have_attribute("data-status", "open")
        # no webhooks for agents: not in the navigation, and the page says so
        expect(agent.get_by_test_id("nav-webhooks")).to_have_count(0)
        agent.goto(base + "/webhooks")
        expect(agent.get_by_test_id("webhooks-forbidden")).to_be_visible()
        expect(agent.get_by_test_id("nav-campaigns")).to_have_count(0)
        agent.goto(base + "/campaigns")
        expect(agent.get_by_test_id("campaigns-forbidden")).to_be_visible()
        agent.get_by_test_id("nav-devices").click()
        expect(agent.get_by_test_id("device-card")).to_have_count(1)
        expect(agent.get_by_test_id("add-device-button")).to_have_count(0)
        expect(agent.get_by_test_id("device-delete")).to_have_count(0)
        expect(agent.get_by_test_id("device-logout")).to_have_count(0)
        agent.screenshot(path=str(SHOTS / "11c-agent-devices.png"))

        # the admin makes Luis an admin and back, then disables him: his open
        # session ends at once (socket closed, sent to the login page)
        row = page.locator(f'[data-testid="user-row"]:has-text("{luis_email}")')
        row.get_by_test_id("user-role-select").select_option("admin")
        expect(row).to_have_attribute("data-role", "admin")
        row.get_by_test_id("user-role-select").select_option("agent")
        expect(row).to_have_attribute("data-role", "agent")
        row.get_by_test_id("user-toggle-disabled").click()
        expect(row).to_have_attribute("data-disabled", "true")
        expect(row.get_by_test_id("user-disabled-badge")).to_be_visible()
        shot("11d-user-disabled")
        expect(agent.get_by_test_id("login-form")).to_be_visible(timeout=10_000)
        agent.get_by_test_id("login-email").fill(luis_email)
        agent.get_by_test_id("login-password").fill("agente456")
        agent.get_by_test_id("login-submit").click()
        expect(agent.get_by_text("desactivado")).to_be_visible()
        agent.screenshot(path=str(SHOTS / "11e-agent-disabled.png"))
        agent_ctx.close()
        # removed for good
        row.get_by_test_id("user-remove").click()
        page.get_by_test_id("confirm-ok").click()
        expect(page.get_by_test_id("user-row")).to_have_count(1)

        team_inbox_steps(page, system, device_id, shot)

        # a contact writing from a LID: one chat, which gets the phone number
        # (and follows it, open) once a message reveals it
        page.get_by_test_id("nav-inbox").click()
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215587654321",
                "lid": "70001112223334",
                "phone_known": False,
                "push_name": "Lucía Ortiz",
                "body": "Hola, soy Lucía",
            },
        )
        lucia = page.get_by_test_id("chat-item").filter(has_text="Lucía Ortiz")
        expect(lucia).to_have_count(1)
        lucia.click()
        expect(page.get_by_test_id("message-bubble").last).to_contain_text("soy Lucía")
        expect(page.get_by_test_id("inbox-page")).to_contain_text("Número aún no compartido")
        shot("11a-lid-chat")
        sim_sync(
            system,
            device_id,
            "inbound",
            {
                "from": "5215587654321",
                "lid": "70001112223334",
                "push_name": "Lucía Ortiz",
                "body": "Te escribo desde mi número",
            },
        )
        expect(page.get_by_test_id("message-bubble").last).to_contain_text("desde mi número")
        expect(page.get_by_test_id("message-bubble")).to_have_count(2)
        expect(lucia).to_have_count(1)
        expect(page.get_by_test_id("chat-item")).to_have_count(2)
        expect(page.get_by_test_id("inbox-page")).to_contain_text("5215587654321")
        shot("11b-lid-chat-merged")

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
            shot("webhooks-01-form")
            page.get_by_test_id("webhook-submit").click()
            secret_box = page.get_by_test_id("webhook-secret")
            expect(secret_box).to_contain_text("whsec_")
            secret = secret_box.inner_text().strip()
            page.get_by_test_id("webhook-secret-copy").click()
            expect(page.get_by_test_id("webhook-secret-copy")).to_have_attribute(
                "data-copied", "true"
            )
            assert page.evaluate("navigator.clipboard.readText()") == secret
            shot("webhooks-02-secret")
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
            shot("webhooks-03-deliveries")
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
            shot("webhooks-04-paused")
            row.get_by_test_id("webhook-delete").click()
            page.get_by_test_id("confirm-ok").click()
            expect(page.get_by_test_id("webhooks-empty")).to_be_visible()

        # a second number: its QR is never scanned, the card says so and connects
        # again; later WhatsApp cannot be told of its unlink, and the card says
        # the phone still lists it (Spanish, then English)
        page.get_by_test_id("nav-devices").click()
        page.get_by_test_id("add-device-button").click()
        page.get_by_test_id("device-name-input").fill("Caja")
        page.get_by_test_id("device-create-submit").click()
        caja = page.get_by_test_id("device-card").filter(has_text="Caja")
        expect(caja.get_by_test_id("device-qr")).to_be_visible(timeout=20_000)
        caja_id = caja.get_attribute("data-device-id") or ""
        sim_sync(system, caja_id, "qr_timeout", {})
        expired = caja.get_by_test_id("device-qr-expired")
        expect(expired).to_be_visible()
        expect(expired).to_contain_text("El código QR expiró")
        expect(caja.get_by_test_id("device-status")).to_have_attribute(
            "data-status", "disconnected"
        )
        expect(caja.get_by_test_id("device-connect")).to_have_count(0)  # one button: this one
        shot("05b-device-qr-expired")
        caja.get_by_test_id("device-qr-expired-connect").click()
        expect(caja.get_by_test_id("device-qr")).to_be_visible(timeout=20_000)
        expect(expired).to_have_count(0)
        sim_sync(system, caja_id, "scan", {"phone": "34600333444"})
        expect(caja.get_by_test_id("device-status")).to_have_attribute(
            "data-status", "connected", timeout=20_000
        )
        sim_sync(system, caja_id, "unlink_fails", {})
        caja.get_by_test_id("device-logout").click()
        page.get_by_test_id("confirm-ok").click()
        expect(caja.get_by_test_id("device-status")).to_have_attribute("data-status", "logged_out")
        warning = caja.get_by_test_id("device-unlink-failed")
        expect(warning).to_contain_text("El teléfono aún muestra este dispositivo")
        expect(warning).to_contain_text("Dispositivos vinculados")
        shot("05c-device-unlink-failed")
        page.get_by_test_id("lang-switch").click()
        expect(warning).to_contain_text("The phone still lists this device")
        expect(warning).to_contain_text("Linked devices")
        shot("05d-device-unlink-failed-en")
        page.get_by_test_id("lang-switch").click()
        expect(warning).to_contain_text("El teléfono aún muestra este dispositivo")

        # campaigns: the leads of stage "new" (made by the WhatsApp messages above),
        # previewed and counted, created as a draft, started, paused and resumed,
        # then every one sent, delivered and read, with the recipients table
        page.get_by_test_id("nav-campaigns").click()
        expect(page.get_by_test_id("campaigns-empty")).to_be_visible()
        page.get_by_test_id("campaign-add").click()
        page.get_by_test_id("campaign-name").fill("Rebajas de enero")
        page.get_by_test_id("campaign-body").fill("Hola {{name}}, este mes 20 % en todo")
        page.get_by_test_id("campaign-by-stage").check()
        page.get_by_test_id("campaign-per-minute").fill("60")
        page.get_by_test_id("campaign-preview").click()
        count = page.get_by_test_id("campaign-preview-count")
        expect(count).to_be_visible()
        total = int(count.get_attribute("data-total") or "0")
        assert total >= 2, total
        expect(page.get_by_test_id("campaign-preview-lead").first).to_be_visible()
        shot("campaigns-01-preview")
        page.get_by_test_id("campaign-submit").click()
        campaign = page.get_by_test_id("campaign-row")
        expect(campaign).to_have_count(1)
        expect(campaign).to_have_attribute("data-status", "draft")
        campaign.get_by_test_id("campaign-start").click()
        expect(campaign).to_have_attribute("data-status", "running")
        campaign.get_by_test_id("campaign-pause").click()
        expect(campaign).to_have_attribute("data-status", "paused")
        shot("campaigns-02-paused")
        campaign.get_by_test_id("campaign-resume").click()
        counters = campaign.get_by_test_id("campaign-counters")
        expect(counters).to_have_attribute("data-read", str(total), timeout=60_000)
        expect(campaign).to_have_attribute("data-status", "done", timeout=30_000)
        expect(counters).to_have_attribute("data-sent", str(total))
        campaign.get_by_test_id("campaign-recipients-toggle").click()
        expect(campaign.get_by_test_id("recipient-row")).to_have_count(total)
        expect(campaign.locator('[data-testid="recipient-row"][data-status="read"]')).to_have_count(
            total
        )
        shot("campaigns-03-done")
        page.get_by_test_id("lang-switch").click()
        expect(page.get_by_test_id("nav-campaigns")).to_have_text("Campaigns")
        expect(campaign.get_by_test_id("campaign-status")).to_have_text("Done")
        shot("campaigns-04-english")
        page.get_by_test_id("lang-switch").click()

        page.get_by_test_id("lang-switch").click()
        expect(page.get_by_test_id("nav-inbox")).to_have_text("Inbox")
        shot("12-english")
        page.get_by_test_id("lang-switch").click()

        # the worker holding the first device dies (kill -9): the card says
        # "Conectando" once that worker's heartbeat is gone, before its lease could
        # expire and the other worker take the device over; then "Conectado" again
        page.get_by_test_id("nav-devices").click()
        ventas = page.locator(f'[data-testid="device-card"][data-device-id="{device_id}"]')
        ventas_status = ventas.get_by_test_id("device-status")
        expect(ventas_status).to_have_attribute("data-status", "connected")
        holder = holding_worker(system, device_id)
        system.kill(holder)
        expect(ventas_status).to_have_attribute("data-status", "connecting", timeout=20_000)
        expect(ventas_status).to_contain_text("Conectando")
        # still linked: nothing to scan, the card says so and offers no QR
        expect(ventas.get_by_test_id("device-reconnecting")).to_contain_text(
            "No hace falta escanear"
        )
        expect(ventas.get_by_test_id("device-pairing")).to_have_count(0)
        shot("05e-device-worker-died")
        expect(ventas_status).to_have_attribute("data-status", "connected", timeout=40_000)
        assert holding_worker(system, device_id) != holder
        expect(ventas.get_by_test_id("device-reconnecting")).to_have_count(0)
        shot("05f-device-taken-over")
        system.start(holder)
        system.wait_ready(holder)

        # phone width
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/inbox")
        expect(page.get_by_test_id("chat-item").first).to_be_visible()
        shot("13-phone-inbox")
        page.get_by_test_id("chat-item").filter(has_text="José Peña").click()
        expect(page.get_by_test_id("composer-input")).to_be_visible()
        shot("14-phone-thread")
        # the lead drawer over the conversation; Esc closes it
        page.get_by_test_id("thread-show-lead").click()
        expect(page.get_by_test_id("lead-drawer")).to_be_visible()
        expect(page.get_by_test_id("lead-drawer")).to_contain_text("José Peña")
        shot("14b-phone-lead-drawer")
        page.keyboard.press("Escape")
        expect(page.get_by_test_id("lead-drawer")).to_have_count(0)
        page.goto(base + "/devices")
        shot("15-phone-devices")
        page.goto(base + "/leads?view=kanban")
        expect(page.get_by_test_id("lead-card").first).to_be_visible()
        shot("16-phone-kanban")

        page.get_by_test_id("logout-button-mobile").click()
        expect(page.get_by_test_id("login-form")).to_be_visible()
        browser.close()
    assert not errors, errors


def team_inbox_steps(
    page: Page, system: System, device_id: str, shot: Callable[[str], None]
) -> None:
    """Issue 14: quick replies, notes, labels, assignment, tabs with live unread
    counts, resolve and reopen on inbound, label filter, message search."""
    from playwright.sync_api import expect

    # quick replies: create one, a duplicate shortcut is refused beside the field
    page.get_by_test_id("nav-quick-replies").click()
    page.get_by_test_id("quick-shortcut").fill("saludo")
    page.get_by_test_id("quick-body").fill("¡Hola {{name}}! Gracias por escribir a Café Olé ☕")
    page.get_by_test_id("quick-submit").click()
    expect(page.get_by_test_id("quick-row")).to_have_count(1)
    page.get_by_test_id("quick-shortcut").fill("Saludo")
    page.get_by_test_id("quick-body").fill("otro")
    page.get_by_test_id("quick-submit").click()
    expect(page.get_by_test_id("quick-shortcut-error")).to_be_visible()
    shot("team-01-quick-replies")

    # the inbox: tabs, the conversation; "/" in the composer lists the replies
    page.get_by_test_id("nav-inbox").click()
    expect(page.locator('[data-testid="inbox-tab"][data-tab="all"]')).to_have_attribute(
        "aria-selected", "true"
    )
    page.get_by_test_id("chat-item").first.click()
    composer = page.get_by_test_id("composer-input")
    composer.fill("/sal")
    expect(page.get_by_test_id("quick-reply-option")).to_have_count(1)
    close_toasts = page.locator('[data-testid^="toast-"] button')
    while close_toasts.count():  # earlier confirmations would cover the menu
        close_toasts.first.click()
    shot("team-02-quick-reply-menu")
    composer.press("Enter")
    expect(composer).to_have_value("¡Hola José Peña 😀! Gracias por escribir a Café Olé ☕")
    composer.press("Enter")
    expect(
        page.locator('[data-testid="message-bubble"][data-direction="out"]').last
    ).to_contain_text("Gracias por escribir")
    # Shift+Enter breaks the line; Esc closes the quick-reply menu
    composer.type("línea 1")
    composer.press("Shift+Enter")
    composer.type("línea 2")
    expect(composer).to_have_value("línea 1\nlínea 2")
    composer.fill("/")
    expect(page.get_by_test_id("quick-reply-menu")).to_be_visible()
    composer.press("Escape")
    expect(page.get_by_test_id("quick-reply-menu")).to_have_count(0)
    composer.fill("")

    # a private note: the composer turns amber, the note stays in the team's timeline
    page.get_by_test_id("composer-mode-note").click()
    expect(page.get_by_test_id("composer")).to_have_attribute("data-mode", "note")
    composer.fill("Cliente mayorista: ofrecer 10 % en el próximo pedido")
    composer.press("Enter")
    note = page.locator('[data-testid="message-bubble"][data-direction="note"]')
    expect(note).to_contain_text("ofrecer 10 %")
    expect(note.get_by_test_id("note-label")).to_contain_text("Ana Núñez")
    shot("team-03-note")
    page.get_by_test_id("composer-mode-reply").click()

    # a label and an assignee; the Mine / Unassigned tabs follow
    page.get_by_test_id("chat-label-add").click()
    page.get_by_test_id("chat-label-input").fill("Mayorista")
    page.get_by_test_id("chat-label-input").press("Enter")
    expect(page.locator('[data-testid="chat-label"][data-label="mayorista"]')).to_be_visible()
    page.get_by_test_id("chat-assignee").select_option(label="Ana Núñez (yo)")
    page.locator('[data-testid="inbox-tab"][data-tab="mine"]').click()
    expect(page.get_by_test_id("chat-item")).to_have_count(1)
    expect(page.get_by_test_id("chat-item-labels")).to_contain_text("mayorista")
    shot("team-04-mine-label")
    page.locator('[data-testid="inbox-tab"][data-tab="unassigned"]').click()
    expect(page.get_by_test_id("chat-item")).to_have_count(0)
    page.locator('[data-testid="inbox-tab"][data-tab="all"]').click()
    expect(page.get_by_test_id("chat-item")).to_have_count(1)

    # resolve: it leaves the open list, and is found under "resolved"
    page.get_by_test_id("chat-resolve").click()
    expect(page.get_by_test_id("chat-status").first).to_have_attribute("data-status", "resolved")
    expect(page.get_by_test_id("chat-reopen")).to_be_visible()
    expect(page.get_by_test_id("chat-item")).to_have_count(0)
    page.get_by_test_id("chat-status-filter").select_option("resolved")
    expect(page.get_by_test_id("chat-item")).to_have_count(1)
    shot("team-05-resolved")
    page.get_by_test_id("chat-status-filter").select_option("open")
    expect(page.get_by_test_id("chat-item")).to_have_count(0)

    # away from the thread, José writes again: reopened, live, with unread counts per tab
    page.get_by_test_id("nav-quick-replies").click()
    page.get_by_test_id("nav-inbox").click()
    sim_sync(
        system,
        device_id,
        "inbound",
        {"from": "5215512345678", "push_name": "José Peña 😀", "body": "¿Me confirmas el pedido?"},
    )
    item = page.get_by_test_id("chat-item").first
    expect(item).to_contain_text("¿Me confirmas el pedido?")
    expect(item.get_by_test_id("chat-unread-badge")).to_have_text("1")
    all_tab = page.locator('[data-testid="inbox-tab"][data-tab="all"]')
    expect(all_tab.get_by_test_id("inbox-tab-count")).to_have_text("1")
    mine_tab = page.locator('[data-testid="inbox-tab"][data-tab="mine"]')
    expect(mine_tab.get_by_test_id("inbox-tab-count")).to_have_text("1")
    expect(
        page.locator(
            '[data-testid="inbox-tab"][data-tab="unassigned"] [data-testid="inbox-tab-count"]'
        )
    ).to_have_count(0)
    shot("team-06-reopened-live-counts")

    # the label filter
    page.get_by_test_id("chat-label-filter").select_option("mayorista")
    expect(page.get_by_test_id("chat-item")).to_have_count(1)
    page.get_by_test_id("chat-label-filter").select_option("")

    # search without the accent, jump to the message in its chat
    page.get_by_test_id("chat-search").fill("cafe oaxaca")
    hit = page.get_by_test_id("message-search-hit").first
    expect(hit).to_contain_text("café de Oaxaca")
    shot("team-07-search")
    hit.click()
    focused = page.locator('[data-testid="message-bubble"][data-focused="true"]')
    expect(focused).to_contain_text("Oaxaca")
    expect(item.get_by_test_id("chat-unread-badge")).to_have_count(0)
    shot("team-08-search-jump")
    page.get_by_test_id("chat-search").press("Escape")
    expect(page.get_by_test_id("chat-search")).to_have_value("")
    expect(page.get_by_test_id("message-search-results")).to_have_count(0)

    # the same inbox in English
    page.get_by_test_id("lang-switch").click()
    expect(page.locator('[data-testid="inbox-tab"][data-tab="mine"]')).to_contain_text("Mine")
    expect(page.get_by_test_id("composer-mode-note")).to_have_text("Private note")
    shot("team-09-english")
    page.get_by_test_id("lang-switch").click()
