"""Browser smoke test of the web app against the mock backend (e2e/mock_backend.py).

    .venv/bin/python frontend/e2e/mock_backend.py --port 8090 &
    .venv/bin/python frontend/e2e/smoke.py --base http://127.0.0.1:8090

Screenshots go to frontend/test-artifacts/. The real browser tests (issue 7)
drive the same data-testids against the gateway and the simulator's NATS
subjects instead of the /__mock endpoints.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUT = Path(__file__).resolve().parent.parent / "test-artifacts"
# 1x1 green PNG
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M/wHwAEBgIApD5fRAAAAABJRU5ErkJggg=="


def post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8090")
    base = ap.parse_args().base
    OUT.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-ES")
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        shot = lambda name: page.screenshot(path=str(OUT / f"{name}.png"))  # noqa: E731

        page.goto(base + "/")
        expect(page.get_by_test_id("login-form")).to_be_visible()
        shot("01-login")
        page.get_by_test_id("to-register").click()
        email = f"ana{int(time.time())}@example.com"
        page.get_by_test_id("register-account").fill("Café Olé S.L.")
        page.get_by_test_id("register-name").fill("Ana Núñez")
        page.get_by_test_id("register-email").fill(email)
        page.get_by_test_id("register-password").fill("short")
        page.get_by_test_id("register-submit").click()
        expect(page.get_by_test_id("register-password-error")).to_be_visible()
        shot("02-register-422")
        page.get_by_test_id("register-password").fill("secreto123")
        page.get_by_test_id("register-submit").click()
        expect(page.get_by_test_id("inbox-page")).to_be_visible()
        expect(page.get_by_test_id("ws-status")).to_have_attribute("data-status", "open")
        shot("03-inbox-empty")

        page.get_by_test_id("nav-devices").click()
        page.get_by_test_id("add-device-button").click()
        page.get_by_test_id("device-name-input").fill("Ventas 🇪🇸")
        page.get_by_test_id("device-create-submit").click()
        card = page.get_by_test_id("device-card").first
        expect(card.get_by_test_id("device-qr")).to_be_visible(timeout=10_000)
        expect(card.get_by_test_id("device-status")).to_have_attribute("data-status", "qr_pending")
        shot("04-device-qr")
        device_id = card.get_attribute("data-device-id") or ""
        post(base, f"/__mock/scan/{device_id}", {"phone": "34600111222"})
        expect(card.get_by_test_id("device-status")).to_have_attribute("data-status", "connected")
        shot("05-device-connected")

        page.get_by_test_id("nav-inbox").click()
        post(base, f"/__mock/inbound/{device_id}", {"from": "5215512345678", "push_name": "José Peña 😀", "body": "¡Hola! ¿Tienen café de Oaxaca? ☕"})
        item = page.get_by_test_id("chat-item").first
        expect(item).to_contain_text("José Peña 😀")
        expect(item.get_by_test_id("chat-unread-badge")).to_have_text("1")
        shot("06-inbox-live")
        item.click()
        expect(page.get_by_test_id("message-bubble").first).to_contain_text("Oaxaca")
        expect(item.get_by_test_id("chat-unread-badge")).to_have_count(0)
        page.get_by_test_id("composer-input").fill("¡Claro! Te envío el catálogo 📄")
        page.get_by_test_id("composer-input").press("Enter")
        out = page.locator('[data-testid="message-bubble"][data-direction="out"]').last
        expect(out).to_be_visible()
        expect(out).to_have_attribute("data-status", "read", timeout=10_000)
        expect(page.locator('[data-testid="message-bubble"][data-direction="out"]')).to_have_count(1)
        post(base, f"/__mock/inbound/{device_id}", {"from": "5215512345678", "push_name": "José Peña 😀", "image_b64": PNG})
        expect(page.get_by_test_id("message-image")).to_be_visible()
        expect(page.get_by_test_id("chat-lead-panel")).to_contain_text("José Peña 😀")
        shot("07-thread")

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
        card = page.locator('[data-testid="lead-card"]').first
        expect(card).to_have_attribute("data-stage", "new")
        card.drag_to(page.locator('[data-testid="kanban-column"][data-stage="qualified"]'))
        expect(page.locator('[data-testid="kanban-column"][data-stage="qualified"] [data-testid="lead-card"]')).to_have_count(1)
        shot("10-kanban")

        page.get_by_test_id("nav-users").click()
        page.get_by_test_id("user-name").fill("Luis Agente")
        page.get_by_test_id("user-email").fill(f"luis{int(time.time())}@example.com")
        page.get_by_test_id("user-password").fill("agente123")
        page.get_by_test_id("user-submit").click()
        expect(page.get_by_test_id("user-row")).to_have_count(2)
        shot("11-users")

        # the access token dies server-side: the next call refreshes silently
        post(base, "/__mock/expire-tokens", {})
        page.get_by_test_id("nav-leads").click()
        page.get_by_test_id("leads-view-table").click()
        expect(page.get_by_test_id("lead-row")).to_have_count(1)

        # the socket drops (and its token is dead): it comes back by itself (4401 → refresh)
        # and what arrived meanwhile shows up without a reload
        page.get_by_test_id("nav-inbox").click()
        post(base, "/__mock/expire-tokens", {})
        post(base, "/__mock/drop-sockets", {})
        post(base, f"/__mock/inbound/{device_id}", {"from": "5215512345678", "push_name": "José Peña 😀", "body": "¿Sigues ahí?"})
        expect(page.get_by_test_id("ws-status")).to_have_attribute("data-status", "open", timeout=15_000)
        expect(page.get_by_test_id("chat-item").first.get_by_test_id("chat-item-preview")).to_have_text("¿Sigues ahí?", timeout=10_000)

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
    real = [e for e in errors if "Failed to load resource" not in e]
    if real:
        raise SystemExit("browser errors: " + "\n".join(real))
    print("smoke: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
