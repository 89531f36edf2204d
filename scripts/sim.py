"""Drive a simulated device (WHATSAPP_DRIVER=simulator) from the command line.

uv run python scripts/sim.py scan <device_id> 5215512345678
uv run python scripts/sim.py inbound <device_id> 5215598765432 "Hola 👋" [push name]
uv run python scripts/sim.py receipt <device_id> <wa_message_id> read
uv run python scripts/sim.py drop|logout <device_id>
uv run python scripts/sim.py <any action> <device_id> --json '{"from": "5215598765432", ...}'
    (every action of docs/API.md "Simulator control": qr_timeout, status_post, react,
    edit, revoke, typing, history, phone, unlink_fails, ...)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from clarin_common.events import sim_subject
from clarin_common.nats import connect, request_json
from clarin_common.settings import CommonSettings


def payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.json is not None:
        loaded = json.loads(args.json)
        if not isinstance(loaded, dict):
            raise SystemExit("--json takes a JSON object")
        return loaded
    rest: list[str] = args.rest
    if args.action == "scan":
        return {"phone": rest[0]}
    if args.action == "inbound":
        body: dict[str, Any] = {"from": rest[0], "body": rest[1] if len(rest) > 1 else ""}
        if len(rest) > 2:
            body["push_name"] = rest[2]
        return body
    if args.action == "receipt":
        return {"wa_message_id": rest[0], "status": rest[1] if len(rest) > 1 else "read"}
    return {}


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", help="scan, inbound, receipt, drop, logout, or any with --json")
    parser.add_argument("device_id")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--json", default=None, help="the action's payload as a JSON object")
    parser.add_argument(
        "--nats", default=None, help="default: CLARIN_NATS_URL from the environment or .env"
    )
    args = parser.parse_args()
    if args.json is None and args.action not in ("scan", "inbound", "receipt", "drop", "logout"):
        parser.error(f"{args.action} takes its payload with --json '{{...}}'")
    nc = await connect(args.nats or CommonSettings().nats_url, name="clarin-sim-cli")
    try:
        reply = await request_json(nc, sim_subject(args.device_id, args.action), payload(args), 5)
    finally:
        await nc.close()
    print(json.dumps(reply, ensure_ascii=False))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
