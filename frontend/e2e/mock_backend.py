"""In-memory stand-in for the Clarin gateway, built from /work/shared/API.md.

Only for developing and smoke-testing the web app when the real services are
not running. Serves frontend/dist with SPA fallback, /api/*, /ws, and a few
/__mock/* control endpoints that play the simulator's role (scan, inbound).

    .venv/bin/python frontend/e2e/mock_backend.py --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response

DIST = Path(__file__).resolve().parent.parent / "dist"
app = FastAPI()

S: dict = {"users": {}, "accounts": {}, "access": {}, "refresh": {}, "devices": {}, "chats": {}, "messages": {},
           "leads": {}, "media": {}, "sockets": {}, "tasks": {}}
STAGES = ["new", "contacted", "qualified", "proposal", "won", "lost"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def err(status: int, code: str, message: str, details=None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")


def session(user: dict, ttl: int = 900) -> dict:
    access = f"{b64({'alg': 'none'})}.{b64({'sub': user['id'], 'exp': int(time.time()) + ttl})}.{secrets.token_hex(8)}"
    refresh = secrets.token_urlsafe(24)
    S["access"][access] = user["id"]
    S["refresh"][refresh] = user["id"]
    return {"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": ttl,
            "user": public_user(user), "account": S["accounts"][user["account_id"]]}


def public_user(u: dict) -> dict:
    return {k: u[k] for k in ("id", "account_id", "email", "name", "role")}


def auth(request: Request) -> dict | None:
    h = request.headers.get("authorization", "")
    tok = h[7:] if h.startswith("Bearer ") else ""
    uid = S["access"].get(tok)
    if not uid:
        return None
    exp = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==")).get("exp", 0)
    return S["users"][uid] if exp > time.time() else None


async def broadcast(account_id: str, type_: str, data: dict) -> None:
    frame = json.dumps({"type": type_, "account_id": account_id, "data": data, "ts": now()})
    for ws in list(S["sockets"].get(account_id, set())):
        try:
            await ws.send_text(frame)
        except Exception:
            S["sockets"][account_id].discard(ws)


def validate(body: dict, rules: dict) -> list:
    details = []
    for field, (required, check, msg) in rules.items():
        v = body.get(field)
        if v in (None, ""):
            if required:
                details.append({"loc": ["body", field], "msg": "Field required", "type": "missing"})
        elif check and not check(v):
            details.append({"loc": ["body", field], "msg": msg, "type": "value_error"})
    return details


# ---------- auth ----------

@app.post("/api/auth/register")
async def register(request: Request):
    b = await request.json()
    d = validate(b, {"account_name": (True, None, ""), "name": (True, None, ""),
                     "email": (True, lambda v: "@" in v, "value is not a valid email address"),
                     "password": (True, lambda v: 8 <= len(v) <= 128, "String should have at least 8 characters")})
    if d:
        return err(422, "validation_error", "Validation failed", d)
    if any(u["email"] == b["email"].lower() for u in S["users"].values()):
        return err(409, "email_taken", "Email already registered")
    acc = {"id": str(uuid.uuid4()), "name": b["account_name"]}
    S["accounts"][acc["id"]] = acc
    user = {"id": str(uuid.uuid4()), "account_id": acc["id"], "email": b["email"].lower(), "name": b["name"],
            "role": "admin", "password": b["password"]}
    S["users"][user["id"]] = user
    return JSONResponse(session(user), status_code=201)


@app.post("/api/auth/login")
async def login(request: Request):
    b = await request.json()
    for u in S["users"].values():
        if u["email"] == str(b.get("email", "")).lower() and u["password"] == b.get("password"):
            return session(u)
    return err(401, "invalid_credentials", "Email or password is wrong")


@app.post("/api/auth/refresh")
async def refresh(request: Request):
    b = await request.json()
    uid = S["refresh"].pop(b.get("refresh_token", ""), None)
    if not uid:
        return err(401, "invalid_token", "Refresh token invalid or reused")
    return session(S["users"][uid])


@app.post("/api/auth/logout")
async def logout(request: Request):
    b = await request.json()
    S["refresh"].pop(b.get("refresh_token", ""), None)
    return Response(status_code=204)


@app.get("/api/auth/me")
async def me(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    return {"user": public_user(u), "account": S["accounts"][u["account_id"]]}


@app.get("/api/users")
async def users(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    return {"items": [public_user(x) for x in S["users"].values() if x["account_id"] == u["account_id"]]}


@app.post("/api/users")
async def create_user(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    if u["role"] != "admin":
        return err(403, "forbidden", "Admins only")
    b = await request.json()
    d = validate(b, {"name": (True, None, ""), "email": (True, lambda v: "@" in v, "value is not a valid email address"),
                     "password": (True, lambda v: 8 <= len(v) <= 128, "String should have at least 8 characters")})
    if d:
        return err(422, "validation_error", "Validation failed", d)
    if any(x["email"] == b["email"].lower() for x in S["users"].values()):
        return err(409, "email_taken", "Email already registered")
    nu = {"id": str(uuid.uuid4()), "account_id": u["account_id"], "email": b["email"].lower(), "name": b["name"],
          "role": b.get("role", "agent"), "password": b["password"]}
    S["users"][nu["id"]] = nu
    return JSONResponse(public_user(nu), status_code=201)


# ---------- devices ----------

def get_device(request: Request, did: str):
    u = auth(request)
    if not u:
        return None, err(401, "unauthorized", "Not authenticated")
    d = S["devices"].get(did)
    if not d or d["account_id"] != u["account_id"]:
        return None, err(404, "not_found", "Device not found")
    return d, None


async def set_status(d: dict, status: str, **kw) -> None:
    d.update(status=status, **kw)
    await broadcast(d["account_id"], "device_status", {"device": d})


async def qr_loop(d: dict) -> None:
    await asyncio.sleep(1)
    await set_status(d, "qr_pending")
    for i in range(6):
        code = f"2@{secrets.token_urlsafe(40)},{secrets.token_urlsafe(20)},{i}"
        exp = (datetime.now(timezone.utc) + timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
        d["_qr"] = {"code": code, "expires_at": exp}
        await broadcast(d["account_id"], "qr_code", {"device_id": d["id"], **d["_qr"]})
        await asyncio.sleep(20)
    d.pop("_qr", None)
    await set_status(d, "disconnected")


def public_device(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


@app.get("/api/devices")
async def list_devices(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    return {"items": [public_device(d) for d in S["devices"].values() if d["account_id"] == u["account_id"]]}


@app.post("/api/devices")
async def create_device(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    b = await request.json()
    if not b.get("name"):
        return err(422, "validation_error", "Validation failed", [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}])
    d = {"id": str(uuid.uuid4()), "account_id": u["account_id"], "name": b["name"], "phone": None, "jid": None,
         "status": "disconnected", "last_error": None, "last_seen_at": None, "created_at": now()}
    S["devices"][d["id"]] = d
    return JSONResponse(public_device(d), status_code=201)


@app.post("/api/devices/{did}/connect")
async def connect(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    if d.get("_session"):
        await set_status(d, "connected", last_seen_at=now())
    else:
        d["status"] = "connecting"
        S["tasks"][did] = asyncio.create_task(qr_loop(d))
    return JSONResponse(public_device(d), status_code=202)


@app.get("/api/devices/{did}/qr")
async def qr(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    if d.get("_qr") and d["status"] == "qr_pending":
        return d["_qr"]
    return err(404, "not_found", "No QR pending")


@app.post("/api/devices/{did}/pair-phone")
async def pair_phone(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    return {"pairing_code": "ABCD-1234"}


async def stop_task(did: str) -> None:
    t = S["tasks"].pop(did, None)
    if t:
        t.cancel()


@app.post("/api/devices/{did}/disconnect")
async def disconnect(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    await stop_task(did)
    d.pop("_qr", None)
    await set_status(d, "disconnected")
    return JSONResponse(public_device(d), status_code=202)


@app.post("/api/devices/{did}/logout")
async def device_logout(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    await stop_task(did)
    d.pop("_session", None)
    await set_status(d, "logged_out")
    return JSONResponse(public_device(d), status_code=202)


@app.delete("/api/devices/{did}")
async def delete_device(did: str, request: Request):
    d, e = get_device(request, did)
    if e:
        return e
    await stop_task(did)
    S["devices"].pop(did)
    return Response(status_code=204)


# ---------- chats & messages ----------

def page(items: list, request: Request) -> dict:
    limit = int(request.query_params.get("limit", 50))
    start = int(request.query_params.get("cursor") or 0)
    chunk = items[start:start + limit]
    return {"items": chunk, "next_cursor": str(start + limit) if start + limit < len(items) else None}


@app.get("/api/chats")
async def list_chats(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    q = request.query_params.get("q", "").lower()
    items = [c for c in S["chats"].values() if c["_account"] == u["account_id"]
             and (not q or q in (c["name"] or "").lower() or q in (c["phone"] or ""))
             and (request.query_params.get("unread") != "true" or c["unread_count"] > 0)
             and (not request.query_params.get("device_id") or c["device_id"] == request.query_params["device_id"])]
    items.sort(key=lambda c: c["last_message_at"] or "", reverse=True)
    return page([pub(c) for c in items], request)


def pub(c: dict) -> dict:
    return {k: v for k, v in c.items() if not k.startswith("_")}


def get_chat(request: Request, cid: str):
    u = auth(request)
    if not u:
        return None, err(401, "unauthorized", "Not authenticated")
    c = S["chats"].get(cid)
    if not c or c["_account"] != u["account_id"]:
        return None, err(404, "not_found", "Chat not found")
    return c, None


@app.get("/api/chats/{cid}")
async def chat(cid: str, request: Request):
    c, e = get_chat(request, cid)
    return e or pub(c)


@app.get("/api/chats/{cid}/messages")
async def chat_messages(cid: str, request: Request):
    c, e = get_chat(request, cid)
    if e:
        return e
    items = sorted((m for m in S["messages"].values() if m["chat_id"] == cid), key=lambda m: m["sent_at"], reverse=True)
    return page(items, request)


@app.post("/api/chats/{cid}/read")
async def read(cid: str, request: Request):
    c, e = get_chat(request, cid)
    if e:
        return e
    c["unread_count"] = 0
    await broadcast(c["_account"], "chat_read", {"chat_id": cid})
    return Response(status_code=204)


async def receipts(acc: str, m: dict) -> None:
    await asyncio.sleep(0.5)
    m.update(status="sent", wa_message_id=secrets.token_hex(8).upper())
    await broadcast(acc, "message_sent", {"message": m})
    for st, delay in (("delivered", 1.0), ("read", 1.5)):
        await asyncio.sleep(delay)
        m["status"] = st
        await broadcast(acc, "message_status", {"message_id": m["id"], "chat_id": m["chat_id"], "status": st})


async def new_out(c: dict, body: str | None, client_id: str | None, mtype="text", media=None) -> dict:
    for m in S["messages"].values():
        if client_id and m["client_id"] == client_id:
            return m
    d = S["devices"].get(c["device_id"])
    if not d or d["status"] != "connected":
        raise LookupError
    m = {"id": str(uuid.uuid4()), "chat_id": c["id"], "device_id": c["device_id"], "wa_message_id": None,
         "direction": "out", "type": mtype, "body": body, "media": media, "status": "pending", "sender_jid": None,
         "sender_name": None, "sent_at": now(), "client_id": client_id}
    S["messages"][m["id"]] = m
    c.update(last_message_preview=body or (media or {}).get("file_name"), last_message_at=m["sent_at"])
    await broadcast(c["_account"], "new_message", {"message": m, "chat": pub(c)})
    asyncio.create_task(receipts(c["_account"], m))
    return m


@app.post("/api/messages/send")
async def send(request: Request):
    b = await request.json()
    c, e = get_chat(request, b.get("chat_id", ""))
    if e:
        return e
    try:
        m = await new_out(c, b.get("body"), b.get("client_id"))
    except LookupError:
        return err(409, "device_not_connected", "Device not connected")
    return JSONResponse(m, status_code=202)


@app.post("/api/messages/send/media")
async def send_media(request: Request):
    form = await request.form()
    c, e = get_chat(request, str(form.get("chat_id", "")))
    if e:
        return e
    f = form["file"]
    data = await f.read()
    mid_media = {"url": "", "mime_type": f.content_type, "file_name": f.filename, "size": len(data)}
    ct = f.content_type or ""
    mtype = "image" if ct.startswith("image/") else "video" if ct.startswith("video/") else "audio" if ct.startswith("audio/") else "document"
    try:
        m = await new_out(c, form.get("caption") or None, form.get("client_id"), mtype, mid_media)
    except LookupError:
        return err(409, "device_not_connected", "Device not connected")
    m["media"]["url"] = f"/api/media/{m['id']}"
    S["media"][m["id"]] = (data, ct)
    return JSONResponse(m, status_code=202)


@app.get("/api/media/{mid}")
async def media(mid: str, request: Request):
    if not auth(request):
        return err(401, "unauthorized", "Not authenticated")
    if mid not in S["media"]:
        return err(404, "not_found", "No media")
    data, ct = S["media"][mid]
    return Response(data, media_type=ct)


# ---------- leads ----------

def lead_rules():
    return {"name": (True, None, ""), "email": (False, lambda v: "@" in v, "value is not a valid email address"),
            "stage": (False, lambda v: v in STAGES, "Unknown stage")}


@app.get("/api/pipeline/stages")
async def stages(request: Request):
    if not auth(request):
        return err(401, "unauthorized", "Not authenticated")
    return {"items": [{"key": k, "name": k.title(), "position": i} for i, k in enumerate(STAGES)]}


@app.get("/api/leads")
async def leads(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    qp = request.query_params
    q = qp.get("q", "").lower()
    items = [l for l in S["leads"].values() if l["account_id"] == u["account_id"]
             and (not qp.get("stage") or l["stage"] == qp["stage"]) and (not qp.get("tag") or qp["tag"] in l["tags"])
             and (not q or any(q in (l[k] or "").lower() for k in ("name", "phone", "email", "company")))]
    items.sort(key=lambda l: l["created_at"], reverse=True)
    return page(items, request)


def get_lead(request: Request, lid: str):
    u = auth(request)
    if not u:
        return None, err(401, "unauthorized", "Not authenticated")
    l = S["leads"].get(lid)
    if not l or l["account_id"] != u["account_id"]:
        return None, err(404, "not_found", "Lead not found")
    return l, None


async def make_lead(acc: str, b: dict, source="manual", chat_id=None) -> dict:
    l = {"id": str(uuid.uuid4()), "account_id": acc, "name": b["name"], "phone": b.get("phone"), "email": b.get("email"),
         "company": b.get("company"), "stage": b.get("stage") or "new", "tags": b.get("tags") or [], "notes": b.get("notes"),
         "value": b.get("value"), "assigned_to": b.get("assigned_to"), "source": source, "chat_id": chat_id,
         "last_contact_at": None, "created_at": now(), "updated_at": now()}
    S["leads"][l["id"]] = l
    await broadcast(acc, "lead_created", {"lead": l})
    return l


@app.post("/api/leads")
async def create_lead(request: Request):
    u = auth(request)
    if not u:
        return err(401, "unauthorized", "Not authenticated")
    b = await request.json()
    d = validate(b, lead_rules())
    if d:
        return err(422, "validation_error", "Validation failed", d)
    if b.get("phone") and any(l["phone"] == b["phone"] and l["account_id"] == u["account_id"] for l in S["leads"].values()):
        return err(409, "lead_phone_taken", "A lead with this phone exists")
    return JSONResponse(await make_lead(u["account_id"], b), status_code=201)


@app.get("/api/leads/{lid}")
async def lead(lid: str, request: Request):
    l, e = get_lead(request, lid)
    return e or l


@app.put("/api/leads/{lid}")
async def update_lead(lid: str, request: Request):
    l, e = get_lead(request, lid)
    if e:
        return e
    b = await request.json()
    rules = {k: (False, v[1], v[2]) for k, v in lead_rules().items()}
    d = validate(b, rules)
    if "name" in b and not b["name"]:
        d.append({"loc": ["body", "name"], "msg": "Field required", "type": "missing"})
    if d:
        return err(422, "validation_error", "Validation failed", d)
    l.update({k: v for k, v in b.items() if k in l}, updated_at=now())
    await broadcast(l["account_id"], "lead_updated", {"lead": l})
    return l


@app.delete("/api/leads/{lid}")
async def delete_lead(lid: str, request: Request):
    l, e = get_lead(request, lid)
    if e:
        return e
    S["leads"].pop(lid)
    await broadcast(l["account_id"], "lead_deleted", {"lead_id": lid})
    return Response(status_code=204)


# ---------- simulator-like controls ----------

@app.post("/__mock/scan/{did}")
async def scan(did: str, request: Request):
    b = await request.json()
    d = S["devices"][did]
    await stop_task(did)
    d.pop("_qr", None)
    d["_session"] = True
    await set_status(d, "connected", phone=b["phone"], jid=f"{b['phone']}@s.whatsapp.net", last_seen_at=now())
    return {"ok": True}


@app.post("/__mock/inbound/{did}")
async def inbound(did: str, request: Request):
    b = await request.json()
    d = S["devices"][did]
    acc = d["account_id"]
    jid = f"{b['from']}@s.whatsapp.net"
    c = next((c for c in S["chats"].values() if c["device_id"] == did and c["jid"] == jid), None)
    if not c:
        c = {"id": str(uuid.uuid4()), "device_id": did, "jid": jid, "name": b.get("push_name"), "phone": b["from"],
             "last_message_preview": None, "last_message_at": None, "unread_count": 0, "lead_id": None, "_account": acc}
        S["chats"][c["id"]] = c
    m = {"id": str(uuid.uuid4()), "chat_id": c["id"], "device_id": did, "wa_message_id": secrets.token_hex(8).upper(),
         "direction": "in", "type": b.get("type", "text"), "body": b.get("body"), "media": None, "status": "received",
         "sender_jid": jid, "sender_name": b.get("push_name"), "sent_at": now(), "client_id": None}
    if b.get("image_b64"):
        data = base64.b64decode(b["image_b64"])
        S["media"][m["id"]] = (data, "image/png")
        m.update(type="image", media={"url": f"/api/media/{m['id']}", "mime_type": "image/png", "file_name": "foto.png", "size": len(data)})
    S["messages"][m["id"]] = m
    c.update(last_message_preview=m["body"] or "📷", last_message_at=m["sent_at"], unread_count=c["unread_count"] + 1)
    await broadcast(acc, "new_message", {"message": m, "chat": pub(c)})
    if not any(l["phone"] == b["from"] and l["account_id"] == acc for l in S["leads"].values()):
        await asyncio.sleep(0.3)
        l = await make_lead(acc, {"name": b.get("push_name") or b["from"], "phone": b["from"]}, "whatsapp", c["id"])
        c["lead_id"] = l["id"]
    return {"ok": True, "chat_id": c["id"], "message_id": m["id"]}


@app.post("/__mock/expire-tokens")
async def expire_tokens():
    S["access"].clear()
    return {"ok": True}


@app.post("/__mock/drop-sockets")
async def drop_sockets():
    for group in S["sockets"].values():
        for ws in list(group):
            try:
                await ws.close(code=1012)
            except Exception:
                pass
        group.clear()
    return {"ok": True}


# ---------- websocket ----------

@app.websocket("/ws")
async def ws(websocket: WebSocket):
    tok = websocket.query_params.get("token", "")
    uid = S["access"].get(tok)
    await websocket.accept()
    if not uid:
        await websocket.close(code=4401)
        return
    acc = S["users"][uid]["account_id"]
    S["sockets"].setdefault(acc, set()).add(websocket)
    try:
        while True:
            msg = json.loads(await websocket.receive_text())
            if msg.get("type") == "ping":
                await websocket.send_text(json.dumps({"type": "pong"}))
    except WebSocketDisconnect:
        pass
    finally:
        S["sockets"][acc].discard(websocket)


# ---------- static app with SPA fallback ----------

@app.get("/{path:path}")
async def spa(path: str):
    if path.startswith(("api/", "ws")):
        return err(404, "not_found", "Not found")
    f = DIST / path
    if path and f.is_file():
        return FileResponse(f)
    return FileResponse(DIST / "index.html")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8090)
    uvicorn.run(app, host="127.0.0.1", port=ap.parse_args().port, log_level="warning")
