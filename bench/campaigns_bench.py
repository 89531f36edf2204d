"""Campaign pace: recipients handed to the send queue at the campaign's pace per device.

Runs the campaigns service in-process against a throw-away database and a
private nats-server, with stand-ins for the leads and devices services (our own
code answering their routes) and for messaging's ``svc.messaging.send`` (it
answers at once and notes when each hand-over arrived). It creates one campaign
per device (``--devices``, ``--leads`` each plus ``--skipped`` opted-out ones),
starts them all, and reports for each device the pace achieved (hand-overs - 1 ÷
first → last) beside the configured ``--per-minute``, the hand-overs per lead
(must be 1) and the skipped leads handed over (must be 0). The device's own
queue then paces again (``outbound_bench.py``); this measures the campaign side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import benchenv
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.db import with_database
from clarin_common.events import MESSAGING_SEND_SUBJECT
from clarin_devkit.testing import auth_headers, live_server, make_token, running_app


def upstreams(leads: list[dict[str, Any]], account_id: str) -> FastAPI:
    app = FastAPI()

    @app.get("/api/leads")
    async def list_leads(request: Request, tag: str | None = None) -> JSONResponse:
        return JSONResponse({"items": [x for x in leads if tag in x["tags"]], "next_cursor": None})

    @app.get("/api/devices/{device_id}")
    async def device(device_id: str) -> JSONResponse:
        return JSONResponse({"id": device_id, "account_id": account_id})

    return app


async def main(args: argparse.Namespace) -> dict[str, Any]:
    benchenv.isolate()
    with benchenv.servers(args.nats) as servers:
        return await run(args, servers.nats_url)


async def run(args: argparse.Namespace, nats_url: str) -> dict[str, Any]:
    admin = await asyncpg.connect(with_database(args.pg, "postgres"))
    db_name = f"clarin_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    database_url = with_database(args.pg, db_name)
    account_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    devices = [str(uuid.uuid4()) for _ in range(args.devices)]
    leads: list[dict[str, Any]] = []
    for d, _ in enumerate(devices):
        for i in range(args.leads + args.skipped):
            leads.append(
                {
                    "id": str(uuid.uuid4()),
                    "account_id": account_id,
                    "name": f"Lead {d}-{i}",
                    "phone": f"5215{d:03d}{i:06d}",
                    "stage": "new",
                    "tags": [f"d{d}", *(["opt-out"] if i >= args.leads else [])],
                    "source": "manual",
                    "created_at": now,
                    "updated_at": now,
                }
            )
    handed: dict[str, list[tuple[float, str]]] = {d: [] for d in devices}
    expected = args.devices * args.leads
    all_handed = asyncio.Event()
    nc = await natsmod.connect(nats_url, name="campaigns-bench")

    async def messaging(msg: Msg) -> None:
        request = json.loads(msg.data)
        handed[request["device_id"]].append((time.monotonic(), request["client_id"]))
        if sum(len(v) for v in handed.values()) >= expected:
            all_handed.set()
        reply = {"ok": True, "result": {"message_id": request["message_id"], "status": "pending"}}
        await msg.respond(json.dumps(reply).encode())

    sub = await nc.subscribe(MESSAGING_SEND_SUBJECT, cb=messaging)
    try:
        from clarin_campaigns.main import create_app
        from clarin_campaigns.settings import CampaignsSettings

        async with live_server(upstreams(leads, account_id)) as url:
            settings = CampaignsSettings(
                _env_file=None,
                env="dev",
                database_url=database_url,
                nats_url=nats_url,
                leads_url=url,
                devices_url=url,
                jitter=args.jitter,
            )
            headers = auth_headers(make_token(account_id=account_id))
            async with running_app(create_app(settings)) as client:
                ids = []
                for d, device_id in enumerate(devices):
                    resp = await client.post(
                        "/api/campaigns",
                        json={
                            "name": f"bench {d}",
                            "device_id": device_id,
                            "body": "Hola {{name}}",
                            "audience": {"tag": f"d{d}"},
                            "per_minute": args.per_minute,
                        },
                        headers=headers,
                    )
                    resp.raise_for_status()
                    ids.append(resp.json()["id"])
                started = time.monotonic()
                for campaign_id in ids:
                    resp = await client.post(f"/api/campaigns/{campaign_id}/start", headers=headers)
                    resp.raise_for_status()
                timeout = args.leads * 60 / args.per_minute * 1.5 + 30
                await asyncio.wait_for(all_handed.wait(), timeout)
                elapsed = time.monotonic() - started
    finally:
        await sub.unsubscribe()
        await nc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
    rates = [(len(v) - 1) / (v[-1][0] - v[0][0]) * 60 for v in handed.values() if len(v) > 1]
    client_ids = [c for v in handed.values() for _, c in v]
    skipped_ids = {x["id"] for x in leads if "opt-out" in x["tags"]}
    return {
        "devices": args.devices,
        "leads_per_device": args.leads,
        "per_minute_configured": args.per_minute,
        "jitter": args.jitter,
        "handed_over": len(client_ids),
        "repeats": len(client_ids) - len(set(client_ids)),
        "skipped_handed_over": sum(1 for c in client_ids if c.rsplit(":", 1)[1] in skipped_ids),
        "pace_per_minute_median": round(statistics.median(rates), 2),
        "pace_per_minute_min": round(min(rates), 2),
        "pace_per_minute_max": round(max(rates), 2),
        "elapsed_s": round(elapsed, 1),
        "elapsed_s_the_pace_allows": round((args.leads - 1) * 60 / args.per_minute, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--leads", type=int, default=40, help="leads to write to, per device")
    parser.add_argument("--skipped", type=int, default=5, help="opted-out leads per device")
    parser.add_argument("--per-minute", type=int, default=30)
    parser.add_argument("--jitter", type=float, default=0.3)
    parser.add_argument("--pg", default=benchenv.DEFAULT_POSTGRES)
    parser.add_argument("--nats", default=None)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
