"""Issue 12 in real Chromium: replies with their quote, reactions, edits, deletes
for everyone, typing and the history import, from the contact (simulator) and
from the agent. Screenshots go to test-artifacts/screenshots/conversation-*.png."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.browser.test_web_app import ARGS, CHROMIUM, CSP_WATCH, SHOTS, _csp_error, pytestmark
from tests.browser.test_web_app import sim_sync as sim
from tests.e2e.helpers import linked_device, register
from tests.e2e.system import System

__all__ = ["pytestmark"]

CONTACT = "5215587654321"


def setup(system: System) -> tuple[dict[str, Any], str]:
    async def run() -> tuple[dict[str, Any], str]:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as client:
            session = await register(client, "Marta Ibáñez")
            device = await linked_device(client, session, system.nats_url, "34911222333")
            return session, str(device["id"])

    return asyncio.run(run())


def test_whole_conversation_journey(system: System) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    session, device_id = setup(system)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        ctx.add_init_script(CSP_WATCH)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: _csp_error(m, errors))

        def shot(name: str) -> None:
            page.screenshot(path=str(SHOTS / f"conversation-{name}.png"))

        page.goto(system.base_url + "/")
        page.get_by_test_id("login-email").fill(session["email"])
        page.get_by_test_id("login-password").fill("correct horse battery")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("ws-status")).to_have_attribute("data-status", "open")

        # the contact writes, then quotes their own question
        sim(system, device_id, "inbound",
            {"from": CONTACT, "push_name": "Nuria", "body": "¿Hacen envíos a Sevilla?",
             "wa_message_id": "NU-1"})  # fmt: skip
        page.get_by_test_id("chat-item").first.click()
        bubbles = page.get_by_test_id("message-bubble")
        question = bubbles.filter(has_text="Sevilla")
        expect(question).to_be_visible()
        sim(system, device_id, "inbound",
            {"from": CONTACT, "body": "Es para mañana", "reply_to": "NU-1"})  # fmt: skip
        reply = page.locator('[data-testid="message-bubble"][data-direction="in"]').filter(
            has_text="Es para mañana"
        )
        expect(reply.get_by_test_id("message-quote")).to_contain_text("Sevilla")
        # a click on the quote shows the quoted message
        reply.get_by_test_id("message-quote").click()
        expect(page.locator('[data-testid="message-bubble"][data-focused="true"]')).to_contain_text(
            "Sevilla"
        )
        shot("01-contact-reply-quote")

        # a reaction under the bubble; an edit; typing in the header and the list
        sim(system, device_id, "react", {"from": CONTACT, "wa_message_id": "NU-1", "emoji": "👍"})
        expect(
            question.locator("xpath=../..").get_by_test_id("message-reaction")
        ).to_have_attribute("data-emoji", "👍")
        sim(system, device_id, "edit", {"wa_message_id": "NU-1", "body": "¿Hacen envíos a Cádiz?"})
        edited = bubbles.filter(has_text="Cádiz")
        expect(edited.get_by_test_id("message-edited")).to_have_text("editado")
        sim(system, device_id, "typing", {"from": CONTACT, "state": "composing"})
        expect(page.get_by_test_id("thread-typing")).to_have_text("escribiendo…")
        expect(page.get_by_test_id("chat-item-typing")).to_be_visible()
        shot("02-reaction-edit-typing")
        sim(system, device_id, "typing", {"from": CONTACT, "state": "paused"})
        expect(page.get_by_test_id("thread-typing")).to_have_count(0)

        # the contact deletes it for everyone: the bubble says so, the quote too
        sim(system, device_id, "revoke", {"wa_message_id": "NU-1"})
        expect(page.get_by_test_id("message-deleted")).to_have_text("Se eliminó este mensaje")
        expect(reply.get_by_test_id("message-quote")).to_contain_text("Se eliminó este mensaje")
        shot("03-contact-deleted")

        # the agent answers quoting the contact's reply
        reply.hover()
        reply.locator("xpath=..").get_by_test_id("message-action-reply").click()
        expect(page.get_by_test_id("composer-reply")).to_contain_text("Es para mañana")
        shot("04-replying")
        composer = page.get_by_test_id("composer-input")
        composer.fill("Sí, llega mañana antes de las 14 h")
        composer.press("Enter")
        ours = page.locator('[data-testid="message-bubble"][data-direction="out"]').last
        expect(ours.get_by_test_id("message-quote")).to_contain_text("Es para mañana")
        expect(ours).to_have_attribute("data-status", "read", timeout=30_000)
        expect(page.get_by_test_id("composer-reply")).to_have_count(0)

        # react to the contact's reply with the picker
        reply.hover()
        reply.locator("xpath=..").get_by_test_id("message-action-react").click()
        expect(page.get_by_test_id("reaction-picker")).to_be_visible()
        shot("05-reaction-picker")
        page.locator('[data-testid="reaction-option"][data-emoji="🙏"]').click()
        mine = reply.locator("xpath=../..").locator(
            '[data-testid="message-reaction"][data-mine="true"]'
        )
        expect(mine).to_have_attribute("data-emoji", "🙏")

        # edit our message, then delete it for everyone
        ours.hover()
        ours.locator("xpath=..").get_by_test_id("message-action-edit").click()
        page.get_by_test_id("message-edit-input").fill("Sí, llega mañana antes de las 13 h")
        page.get_by_test_id("message-edit-save").click()
        expect(ours).to_contain_text("13 h")
        expect(ours.get_by_test_id("message-edited")).to_be_visible()
        shot("06-own-edited")
        page.once("dialog", lambda dialog: dialog.accept())
        ours.hover()
        ours.locator("xpath=..").get_by_test_id("message-action-delete").click()
        expect(ours.get_by_test_id("message-deleted")).to_be_visible()
        shot("07-own-deleted")

        # the phone saw each of them
        seen = sim(system, device_id, "phone", {})["seen"]
        kinds = [s["kind"] for s in seen if s["kind"] != "typing"]
        assert kinds == ["reply", "reaction", "edit", "revoke"], seen
        # typing in the composer showed on the phone, and stopped with the send
        typing = [s["state"] for s in seen if s["kind"] == "typing"]
        assert typing[:2] == ["composing", "paused"], seen

        # a history import: a notice while it runs, the chats when it ends
        start = datetime.now(UTC) - timedelta(days=3)
        history = [
            {
                "from": f"52155800000{c}",
                "push_name": name,
                "messages": [
                    {"body": f"Pedido {i} de {name}", "from_me": i % 2 == 0,
                     "at": (start + timedelta(hours=i)).isoformat()}
                    for i in range(6)
                ],
            }
            for c, name in enumerate(["Rocío", "Iñaki"])
        ]  # fmt: skip
        sim(system, device_id, "history", {"chats": history[:1], "sync_id": "web", "last": False})
        expect(page.get_by_test_id("history-importing")).to_be_visible()
        shot("08-history-importing")
        sim(system, device_id, "history", {"chats": history[1:], "sync_id": "web"})
        expect(page.get_by_test_id("history-importing")).to_have_count(0)
        expect(page.get_by_test_id("chat-item")).to_have_count(3)
        expect(page.get_by_test_id("chat-item").filter(has_text="Iñaki")).to_be_visible()
        shot("09-history-imported")

        # the same in English
        page.get_by_test_id("lang-switch").click()
        expect(page.get_by_test_id("message-deleted").first).to_have_text(
            "This message was deleted"
        )
        expect(page.get_by_test_id("message-quote").first).to_be_visible()
        shot("10-english")
        browser.close()
    assert not errors, errors
