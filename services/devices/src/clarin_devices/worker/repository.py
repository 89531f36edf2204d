"""SQL of the device worker. Its writes are conditional on ``worker_id`` (the
lease holder recorded at claim time), so a worker that lost a device cannot
overwrite what the new owner reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from clarin_devices.devices.repository import Transition, device_from_row

WANTED = "SELECT id, account_id, jid FROM devices WHERE desired_state = 'connected'"

DESIRED_OF = "SELECT id, desired_state FROM devices WHERE id = ANY($1::uuid[])"

CLAIM = "UPDATE devices SET worker_id = $1 WHERE id = ANY($2::uuid[])"

UNCLAIM = "UPDATE devices SET worker_id = NULL WHERE id = $1 AND worker_id = $2"

SET_STATUS = """
WITH old AS (
    SELECT id, status AS old_status, jid AS old_jid, phone AS old_phone,
           last_error AS old_error
    FROM devices
    WHERE id = $1 AND worker_id = $2 AND ($3::text IS NULL OR desired_state = $3)
    FOR UPDATE
)
UPDATE devices d SET
    status = $4,
    jid = CASE WHEN $4 = 'logged_out' THEN NULL ELSE COALESCE($5, d.jid) END,
    phone = COALESCE($6, d.phone),
    last_error = CASE WHEN $8::bool THEN $7 ELSE d.last_error END,
    desired_state = COALESCE($9, d.desired_state),
    qr_code = CASE WHEN $4 = 'qr_pending' THEN d.qr_code ELSE NULL END,
    qr_expires_at = CASE WHEN $4 = 'qr_pending' THEN d.qr_expires_at ELSE NULL END,
    last_seen_at = CASE WHEN $4 = 'connected' OR d.status = 'connected'
                        THEN now() ELSE d.last_seen_at END,
    updated_at = now()
FROM old WHERE d.id = old.id
RETURNING d.id, d.account_id, d.name, d.phone, d.jid, d.status, d.last_error,
          d.last_seen_at, d.created_at, d.desired_state,
          old.old_status, old.old_jid, old.old_phone, old.old_error
"""

SET_QR = """
UPDATE devices SET qr_code = $3, qr_expires_at = $4
WHERE id = $1 AND worker_id = $2 AND desired_state = 'connected' AND status = 'qr_pending'
"""


async def wanted(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch(WANTED))


async def desired_states(pool: asyncpg.Pool, device_ids: Sequence[str]) -> dict[str, str]:
    rows = await pool.fetch(DESIRED_OF, [uuid.UUID(d) for d in device_ids])
    return {str(r["id"]): r["desired_state"] for r in rows}


async def claim(pool: asyncpg.Pool, worker_id: str, device_ids: Sequence[str]) -> None:
    await pool.execute(CLAIM, worker_id, [uuid.UUID(d) for d in device_ids])


async def unclaim(pool: asyncpg.Pool, worker_id: str, device_id: str) -> None:
    await pool.execute(UNCLAIM, uuid.UUID(device_id), worker_id)


async def set_status(
    pool: asyncpg.Pool,
    worker_id: str,
    device_id: str,
    status: str,
    *,
    require_desired: str | None,
    jid: str | None = None,
    phone: str | None = None,
    last_error: str | None = None,
    set_error: bool = False,
    set_desired: str | None = None,
) -> Transition | None:
    row = await pool.fetchrow(
        SET_STATUS,
        uuid.UUID(device_id),
        worker_id,
        require_desired,
        status,
        jid,
        phone,
        last_error,
        set_error,
        set_desired,
    )
    if row is None:
        return None
    changed = (
        row["status"] != row["old_status"]
        or row["jid"] != row["old_jid"]
        or row["phone"] != row["old_phone"]
        or row["last_error"] != row["old_error"]
    )
    return Transition(device_from_row(row), row["desired_state"], changed)


async def set_qr(
    pool: asyncpg.Pool, worker_id: str, device_id: str, code: str, expires_at: datetime
) -> bool:
    result: str = await pool.execute(SET_QR, uuid.UUID(device_id), worker_id, code, expires_at)
    return result.endswith(" 1")
