"""POST /api/messages/send, POST /api/messages/send/media, GET /api/media/{id}."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from clarin_common.ids import chat_id_for
from clarin_common.outbox import PendingEvent
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81"
    b"\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)
TO = "5215512345678"
JID = f"{TO}@s.whatsapp.net"


async def _count(svc: Service, table: str) -> int:
    return int(await svc.ctx.pool.fetchval(f"SELECT count(*) FROM {table}"))


class TestSendText:
    async def test_401(self, svc: Service) -> None:
        resp = await svc.client.post("/api/messages/send", json={"chat_id": str(uuid.uuid4())})
        assert resp.status_code == 401

    async def test_422_names_the_field(self, svc: Service) -> None:
        t = h.new_tenant()
        cases = [
            ({"device_id": t.device_id, "to": TO}, ["body", "body"]),
            ({"device_id": t.device_id, "to": TO, "body": ""}, ["body", "body"]),
            ({"device_id": "x", "to": TO, "body": "hi"}, ["body", "device_id"]),
            ({"device_id": t.device_id, "body": "hi"}, ["body", "to"]),
            ({"to": TO, "body": "hi"}, ["body", "device_id"]),
            ({"body": "hi"}, ["body", "device_id"]),
            ({"device_id": t.device_id, "to": "12", "body": "hi"}, ["body", "to"]),
            (
                {"chat_id": str(uuid.uuid4()), "device_id": t.device_id, "body": "hi"},
                ["body", "device_id"],
            ),
            ({"chat_id": str(uuid.uuid4()), "body": "hi", "client_id": ""}, ["body", "client_id"]),
        ]
        for payload, loc in cases:
            resp = await svc.client.post("/api/messages/send", json=payload, headers=t.headers)
            assert resp.status_code == 422, (payload, resp.text)
            assert loc in h.locs(resp), (payload, resp.text)
        assert await _count(svc, "messages") == 0

    async def test_foreign_device_and_chat_are_404(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send",
            json={"device_id": other.device_id, "to": TO, "body": "hi"},
            headers=t.headers,
        )
        assert resp.status_code == 404
        await h.publish_wa(svc.nc, other, "message", h.inbound("X1"))
        await eventually(lambda: _has_rows(svc, 1))
        chat_id = chat_id_for(other.device_id, JID)
        resp = await svc.client.post(
            "/api/messages/send", json={"chat_id": chat_id, "body": "hi"}, headers=t.headers
        )
        assert resp.status_code == 404
        assert await _count(svc, "messages") == 1

    async def test_devices_service_down_is_503(
        self, clean_state: None, nats_client: NatsClient, tmp_path: Path
    ) -> None:
        t = h.new_tenant()
        async with h.service(
            nats_client, tmp_path, "http://127.0.0.1:9", consumers_enabled=False
        ) as svc:
            resp = await svc.client.post(
                "/api/messages/send",
                json={"device_id": t.device_id, "to": TO, "body": "hi"},
                headers=t.headers,
            )
            assert resp.status_code == 503
            assert await _count(svc, "messages") == 0

    async def test_queued_for_a_device_no_worker_holds(self, svc: Service) -> None:
        t = h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send",
            json={"device_id": t.device_id, "to": TO, "body": "hi", "client_id": "q-1"},
            headers=t.headers,
        )
        assert resp.status_code == 202, resp.text
        message = resp.json()
        assert message["status"] == "pending" and message["wa_message_id"] is None
        # the send waits in WA_OUTBOX under its message id, for whoever holds the device
        queued = await svc.nc.jetstream().get_last_msg(
            "WA_OUTBOX", f"wa.out.{t.device_id}.interactive"
        )
        assert queued.headers is not None and queued.headers["Nats-Msg-Id"] == message["id"]
        envelope = json.loads(queued.data or b"{}")
        assert envelope["id"] == message["id"] and envelope["account_id"] == t.account_id
        assert envelope["data"] == {
            "type": "send_text",
            "message_id": message["id"],
            "client_id": "q-1",
            "to": JID,
            "body": "hi",
            "reply_to": None,
        }
        assert await _count(svc, "outbox") == 0  # published, so no longer waiting
        chats = (await svc.client.get("/api/chats", headers=t.headers)).json()["items"]
        assert [c["last_message_preview"] for c in chats] == ["hi"]

    async def test_bulk_sends_wait_on_their_own_subject(self, svc: Service) -> None:
        t = h.new_tenant()
        async with h.fake_worker(svc.nc, t.device_id, mode="silent") as worker:
            for priority in ("bulk", "interactive"):
                resp = await svc.client.post(
                    "/api/messages/send",
                    json={
                        "device_id": t.device_id,
                        "to": TO,
                        "body": priority,
                        "priority": priority,
                    },
                    headers=t.headers,
                )
                assert resp.status_code == 202, resp.text
            await eventually(lambda: len(worker.subjects) == 2)
        assert worker.subjects == [
            f"wa.out.{t.device_id}.bulk",
            f"wa.out.{t.device_id}.interactive",
        ]
        bad = await svc.client.post(
            "/api/messages/send",
            json={"device_id": t.device_id, "to": TO, "body": "x", "priority": "urgent"},
            headers=t.headers,
        )
        assert bad.status_code == 422 and ["body", "priority"] in h.locs(bad)

    async def test_unpublished_send_is_relayed_from_the_outbox(
        self, svc: Service, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A send whose publish after commit was lost (NATS down, a crash) still
        reaches the queue, under the same id."""
        t = h.new_tenant()
        outbox = svc.ctx.outbox

        async def nats_unreachable(_: Sequence[PendingEvent]) -> None:
            return None  # what Outbox.publish does when NATS is down right after commit

        with monkeypatch.context() as patch:
            patch.setattr(outbox, "publish", nats_unreachable)
            resp = await svc.client.post(
                "/api/messages/send",
                json={"device_id": t.device_id, "to": TO, "body": "later"},
                headers=t.headers,
            )
        assert resp.status_code == 202 and resp.json()["status"] == "pending"
        # the send and its new_message event
        assert await _count(svc, "outbox") == 2
        assert await outbox.relay_once(grace=0) == 2
        queued = await svc.nc.jetstream().get_last_msg(
            "WA_OUTBOX", f"wa.out.{t.device_id}.interactive"
        )
        assert json.loads(queued.data or b"{}")["id"] == resp.json()["id"]
        assert await _count(svc, "outbox") == 0

    async def test_pending_then_sent_then_receipts(self, svc: Service) -> None:
        t = h.new_tenant()
        async with (
            h.fake_worker(svc.nc, t.device_id) as worker,
            h.app_events(svc.nc, t.account_id) as events,
        ):
            resp = await svc.client.post(
                "/api/messages/send",
                json={"device_id": t.device_id, "to": "+52 1 55 1234 5678", "body": "hello"},
                headers=t.headers,
            )
            assert resp.status_code == 202, resp.text
            message = resp.json()
            assert message["status"] == "pending"
            assert message["wa_message_id"] is None
            assert message["direction"] == "out" and message["type"] == "text"
            assert message["chat_id"] == chat_id_for(t.device_id, JID)
            await eventually(lambda: events.of("message_sent"))
            command = worker.commands[0]
            assert command == {
                "type": "send_text",
                "message_id": message["id"],
                "client_id": None,
                "to": JID,
                "body": "hello",
                "reply_to": None,
            }
            first = events.of("new_message")[0]["data"]
            assert first["message"]["status"] == "pending"
            assert first["message"]["id"] == message["id"]
            assert first["chat"]["last_message_preview"] == "hello"
            sent = events.of("message_sent")[0]["data"]["message"]
            assert sent["status"] == "sent" and sent["id"] == message["id"]
            message = sent

            # the worker's own events arrive too: sent (again) and the echo
            await h.publish_wa(
                svc.nc, t, "sent", h.sent_event(message["id"], message["wa_message_id"])
            )
            echo = h.inbound(message["wa_message_id"], body="hello").model_copy(
                update={"direction": "out", "message_id": message["id"], "push_name": None}
            )
            await h.publish_wa(svc.nc, t, "message", echo)
            for n, status in enumerate(("delivered", "read", "delivered")):
                await h.publish_wa(
                    svc.nc, t, "receipt", h.receipt([message["wa_message_id"]], status)
                )
                expected = min(n + 1, 2)
                await eventually(lambda: len(events.of("message_status")) == expected)
            await h.publish_wa(svc.nc, t, "message", h.inbound("LATER"))
            await eventually(lambda: len(events.of("new_message")) == 2)
            statuses = [e["data"]["status"] for e in events.of("message_status")]
            assert statuses == ["delivered", "read"]
        msgs = await svc.client.get(f"/api/chats/{message['chat_id']}/messages", headers=t.headers)
        items = [m for m in msgs.json()["items"] if m["direction"] == "out"]
        assert len(items) == 1
        assert items[0]["status"] == "read"
        assert len(events.of("message_sent")) == 1
        chat = (await svc.client.get(f"/api/chats/{message['chat_id']}", headers=t.headers)).json()
        assert chat["unread_count"] == 1 and chat["phone"] == TO

    async def test_refusal_marks_failed_with_reason(self, svc: Service) -> None:
        t = h.new_tenant()
        async with (
            h.fake_worker(svc.nc, t.device_id, mode="refuse"),
            h.app_events(svc.nc, t.account_id) as events,
        ):
            resp = await svc.client.post(
                "/api/messages/send",
                json={"device_id": t.device_id, "to": TO, "body": "hello"},
                headers=t.headers,
            )
            assert resp.status_code == 202
            assert resp.json()["status"] == "pending"
            await eventually(lambda: events.of("message_status"))
        assert events.of("message_status")[0]["data"]["status"] == "failed"
        chat_id = resp.json()["chat_id"]
        items = (await svc.client.get(f"/api/chats/{chat_id}/messages", headers=t.headers)).json()[
            "items"
        ]
        assert [(m["status"], m["error"]) for m in items] == [
            ("failed", "recipient not on WhatsApp")
        ]

    async def test_timeout_leaves_pending_until_sent_event(self, svc: Service) -> None:
        t = h.new_tenant()
        async with (
            h.fake_worker(svc.nc, t.device_id, mode="silent"),
            h.app_events(svc.nc, t.account_id) as events,
        ):
            resp = await svc.client.post(
                "/api/messages/send",
                json={"device_id": t.device_id, "to": TO, "body": "slow", "client_id": "c-1"},
                headers=t.headers,
            )
            assert resp.status_code == 202
            message = resp.json()
            assert message["status"] == "pending" and message["client_id"] == "c-1"
            # the echo comes first, then the sent event: stored once, sent once
            echo = h.inbound("WA-LATE", body="slow").model_copy(
                update={"direction": "out", "message_id": message["id"], "client_id": "c-1"}
            )
            await h.publish_wa(svc.nc, t, "message", echo)
            await h.publish_wa(svc.nc, t, "sent", h.sent_event(message["id"], "WA-LATE"))
            await eventually(lambda: events.of("message_sent"))
        items = (
            await svc.client.get(f"/api/chats/{message['chat_id']}/messages", headers=t.headers)
        ).json()["items"]
        assert [(m["id"], m["status"], m["wa_message_id"]) for m in items] == [
            (message["id"], "sent", "WA-LATE")
        ]

    async def test_client_id_idempotency(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        payload = {"device_id": t.device_id, "to": TO, "body": "once", "client_id": "abc"}
        async with h.fake_worker(svc.nc, t.device_id) as worker:
            first = await svc.client.post("/api/messages/send", json=payload, headers=t.headers)
            second = await svc.client.post("/api/messages/send", json=payload, headers=t.headers)
            later = await svc.client.post(
                "/api/messages/send", json={**payload, "client_id": "xyz"}, headers=t.headers
            )
            await eventually(lambda: any(c["client_id"] == "xyz" for c in worker.commands))
        assert first.status_code == second.status_code == later.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert [c["client_id"] for c in worker.commands] == ["abc", "xyz"]
        assert await _count(svc, "messages") == 2
        # client ids are per account
        async with h.fake_worker(svc.nc, other.device_id):
            theirs = await svc.client.post(
                "/api/messages/send",
                json={**payload, "device_id": other.device_id},
                headers=other.headers,
            )
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


async def _has_rows(svc: Service, n: int) -> bool:
    return await _count(svc, "messages") >= n


class TestSendMedia:
    async def test_401(self, svc: Service) -> None:
        resp = await svc.client.post(
            "/api/messages/send/media", files={"file": ("a.png", PNG, "image/png")}
        )
        assert resp.status_code == 401

    async def test_422_names_the_field(self, svc: Service) -> None:
        t = h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"device_id": t.device_id, "to": TO},
            headers=t.headers,
        )
        assert resp.status_code == 422 and ["body", "file"] in h.locs(resp)
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"device_id": t.device_id},
            files={"file": ("a.png", PNG, "image/png")},
            headers=t.headers,
        )
        assert resp.status_code == 422 and ["body", "to"] in h.locs(resp)
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"chat_id": "zzz"},
            files={"file": ("a.png", PNG, "image/png")},
            headers=t.headers,
        )
        assert resp.status_code == 422 and ["body", "chat_id"] in h.locs(resp)
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"device_id": t.device_id, "to": TO},
            files={"file": ("a.png", b"", "image/png")},
            headers=t.headers,
        )
        assert resp.status_code == 422 and ["body", "file"] in h.locs(resp)

    async def test_foreign_chat_404(self, svc: Service) -> None:
        t = h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"chat_id": str(uuid.uuid4())},
            files={"file": ("a.png", PNG, "image/png")},
            headers=t.headers,
        )
        assert resp.status_code == 404

    async def test_413(
        self, clean_state: None, nats_client: NatsClient, tmp_path: Path, devices_url: str
    ) -> None:
        t = h.new_tenant()
        async with h.service(
            nats_client, tmp_path, devices_url, max_upload_bytes=1000, consumers_enabled=False
        ) as svc:
            for size in (1001, 200_000):  # read and counted / refused from Content-Length
                resp = await svc.client.post(
                    "/api/messages/send/media",
                    data={"device_id": t.device_id, "to": TO},
                    files={"file": ("big.bin", b"x" * size, "application/pdf")},
                    headers=t.headers,
                )
                assert resp.status_code == 413, resp.text
                assert resp.json()["error"]["code"] == "payload_too_large"
            assert await _count(svc, "messages") == 0

    async def test_png_upload_downloads_byte_for_byte(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        async with h.fake_worker(svc.nc, t.device_id) as worker:
            resp = await svc.client.post(
                "/api/messages/send/media",
                data={"device_id": t.device_id, "to": TO, "caption": "look", "client_id": "m1"},
                files={"file": ("pixel.png", PNG, "image/png")},
                headers=t.headers,
            )
            assert resp.status_code == 202, resp.text
            again = await svc.client.post(
                "/api/messages/send/media",
                data={"device_id": t.device_id, "to": TO, "client_id": "m1"},
                files={"file": ("pixel.png", PNG, "image/png")},
                headers=t.headers,
            )
            await eventually(lambda: worker.commands)
        message = resp.json()
        assert again.status_code == 202 and again.json()["id"] == message["id"]
        assert len(worker.commands) == 1
        assert message["type"] == "image" and message["body"] == "look"
        assert message["status"] == "pending"
        assert message["media"] == {
            "url": f"/api/media/{message['id']}",
            "mime_type": "image/png",
            "file_name": "pixel.png",
            "size": len(PNG),
            "status": "ready",
            "error": None,
        }
        command = worker.commands[0]
        assert command["type"] == "send_media" and command["media_type"] == "image"
        assert command["caption"] == "look" and command["to"] == JID
        # the worker finds the bytes in the wa_media object store
        objects = svc.ctx.objects
        assert (await objects.get(command["media"]["object_key"])).data == PNG

        download = await svc.client.get(message["media"]["url"], headers=t.headers)
        assert download.status_code == 200
        assert download.content == PNG
        assert download.headers["content-type"] == "image/png"
        assert 'filename="pixel.png"' in download.headers["content-disposition"]

        assert (await svc.client.get(message["media"]["url"])).status_code == 401
        foreign = await svc.client.get(message["media"]["url"], headers=other.headers)
        assert foreign.status_code == 404
        bad = await svc.client.get("/api/media/nope", headers=t.headers)
        assert bad.status_code == 422 and ["path", "message_id"] in h.locs(bad)
        missing = await svc.client.get(f"/api/media/{uuid.uuid4()}", headers=t.headers)
        assert missing.status_code == 404

    async def test_types_from_content_type(self, svc: Service) -> None:
        t = h.new_tenant()
        cases = [
            ("clip.mp4", "video/mp4", "video", "inline"),
            ("voice.ogg", "audio/ogg", "audio", "inline"),
            ("offer.pdf", "application/pdf", "document", "attachment"),
            ("page.html", "text/html", "document", "attachment"),
        ]
        async with h.fake_worker(svc.nc, t.device_id):
            for name, ctype, type_, disposition in cases:
                resp = await svc.client.post(
                    "/api/messages/send/media",
                    data={"device_id": t.device_id, "to": TO},
                    files={"file": (name, b"data-" + name.encode(), ctype)},
                    headers=t.headers,
                )
                assert resp.status_code == 202, resp.text
                assert resp.json()["type"] == type_
                download = await svc.client.get(resp.json()["media"]["url"], headers=t.headers)
                assert download.content == b"data-" + name.encode()
                assert download.headers["content-type"].startswith(ctype)
                assert download.headers["content-disposition"].startswith(disposition)

    async def test_queued_with_its_file_for_a_device_no_worker_holds(self, svc: Service) -> None:
        t = h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"device_id": t.device_id, "to": TO},
            files={"file": ("a.png", PNG, "image/png")},
            headers=t.headers,
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "pending"
        queued = await svc.nc.jetstream().get_last_msg(
            "WA_OUTBOX", f"wa.out.{t.device_id}.interactive"
        )
        command = json.loads(queued.data or b"{}")["data"]
        assert command["type"] == "send_media" and command["message_id"] == resp.json()["id"]
        objects = svc.ctx.objects
        assert (await objects.get(command["media"]["object_key"])).data == PNG


class TestServiceSend:
    """``svc.messaging.send``: another service (campaigns) queues a send."""

    async def test_queued_as_bulk_with_the_given_id_and_idempotent(self, svc: Service) -> None:
        t = h.new_tenant()
        message_id = str(uuid.uuid4())
        request = {
            "account_id": t.account_id,
            "device_id": t.device_id,
            "to": TO,
            "body": "Hola Ana",
            "client_id": "campaign:c1:lead1",
            "priority": "bulk",
            "message_id": message_id,
        }
        async with h.fake_worker(svc.nc, t.device_id, mode="silent") as worker:
            replies = [
                json.loads(
                    (await svc.nc.request("svc.messaging.send", json.dumps(r).encode(), 5)).data
                )
                for r in (request, {**request, "message_id": str(uuid.uuid4())})
            ]
            await eventually(lambda: worker.subjects)
        assert (
            replies[0]
            == replies[1]
            == {
                "ok": True,
                "result": {"message_id": message_id, "status": "pending"},
                "error": None,
            }
        )
        assert worker.subjects == [f"wa.out.{t.device_id}.bulk"]
        chats = (await svc.client.get("/api/chats", headers=t.headers)).json()["items"]
        assert [c["last_message_preview"] for c in chats] == ["Hola Ana"]
        bad = json.loads(
            (
                await svc.nc.request(
                    "svc.messaging.send", json.dumps({**request, "to": "12"}).encode(), 5
                )
            ).data
        )
        assert bad["ok"] is False and bad["error"]["code"] == "invalid_send"
