"""SQL of the devices API (asyncpg; the pool's search_path is the ``devices`` schema)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

from clarin_common.contract import Device
from clarin_common.db import to_model
from clarin_devices.devices.schemas import QrCode

_COLUMNS = "id, account_id, name, phone, jid, status, last_error, last_seen_at, created_at"


def device_from_row(row: asyncpg.Record) -> Device:
    return to_model(Device, row)


# A dataclass, not a model like every other answer here: the worker builds one
# positionally (worker/repository.py); it becomes a model when the worker adopts
# docs/SERVICE_RECIPE.md.
@dataclass(frozen=True)
class Transition:
    """A device after an update, and whether what users see of it changed."""

    device: Device
    desired_state: str
    changed: bool


def transition_from_row(row: asyncpg.Record) -> Transition:
    """A row an update returned with ``old_*`` columns (what users saw before)."""
    changed = (
        row["status"] != row["old_status"]
        or row["jid"] != row["old_jid"]
        or row["phone"] != row["old_phone"]
        or row["last_error"] != row["old_error"]
    )
    return Transition(device_from_row(row), row["desired_state"], changed)


# Every update locks the row, remembers what users saw, and returns both.
_OLD = """
WITH old AS (
    SELECT id, status AS old_status, jid AS old_jid, phone AS old_phone,
           last_error AS old_error
    FROM devices WHERE id = $1 AND account_id = $2 FOR UPDATE
)
"""
_RETURNING = f"RETURNING {', '.join('d.' + c.strip() for c in _COLUMNS.split(','))}, " + (
    "d.desired_state, old.old_status, old.old_jid, old.old_phone, old.old_error"
)

INSERT = f"""
INSERT INTO devices (id, account_id, name) VALUES ($1, $2, $3) RETURNING {_COLUMNS}
"""

LIST_FOR_ACCOUNT = f"""
SELECT {_COLUMNS} FROM devices WHERE account_id = $1 ORDER BY created_at, id
"""

GET_FOR_ACCOUNT = f"SELECT {_COLUMNS} FROM devices WHERE id = $1 AND account_id = $2"

# Already on its way (or there): a second connect changes nothing.
CONNECT = (
    _OLD
    + """
UPDATE devices d SET
    desired_state = 'connected',
    status = CASE WHEN d.status IN ('connecting', 'qr_pending', 'connected')
                  THEN d.status ELSE 'connecting' END,
    last_error = CASE WHEN d.status IN ('connecting', 'qr_pending', 'connected')
                      THEN d.last_error ELSE NULL END,
    updated_at = now()
FROM old WHERE d.id = old.id
"""
    + _RETURNING
)

DISCONNECT = (
    _OLD
    + """
UPDATE devices d SET
    desired_state = CASE WHEN d.status = 'logged_out' THEN 'logged_out' ELSE 'disconnected' END,
    status = CASE WHEN d.status = 'logged_out' THEN 'logged_out' ELSE 'disconnected' END,
    last_seen_at = CASE WHEN d.status = 'connected' THEN now() ELSE d.last_seen_at END,
    qr_code = NULL,
    qr_expires_at = NULL,
    updated_at = now()
FROM old WHERE d.id = old.id
"""
    + _RETURNING
)

LOGOUT = (
    _OLD
    + """
UPDATE devices d SET
    desired_state = 'logged_out',
    status = 'logged_out',
    jid = NULL,
    -- the worker got there first (the logout command): keep what it said, such
    -- as "the phone still lists this device"
    last_error = CASE WHEN d.status = 'logged_out' THEN d.last_error ELSE NULL END,
    last_seen_at = CASE WHEN d.status = 'connected' THEN now() ELSE d.last_seen_at END,
    qr_code = NULL,
    qr_expires_at = NULL,
    updated_at = now()
FROM old WHERE d.id = old.id
"""
    + _RETURNING
)

GET_QR = """
SELECT qr_code AS code, qr_expires_at AS expires_at FROM devices
WHERE id = $1 AND account_id = $2 AND status = 'qr_pending'
  AND qr_code IS NOT NULL AND qr_expires_at > now()
"""

DELETE = "DELETE FROM devices WHERE id = $1 AND account_id = $2"

# The workers holding a device users see as live (every account: the holder check
# of devices/holders.py, not a tenant's query).
LIVE_HOLDERS = """
SELECT DISTINCT worker_id FROM devices
WHERE worker_id IS NOT NULL AND desired_state = 'connected'
  AND status IN ('connected', 'qr_pending')
"""

# The devices of workers whose heartbeat is gone: `connecting` until the next
# owner reports. Conditional on the holder, so a device another worker has
# claimed meanwhile is left to it.
MARK_UNHELD = (
    """
WITH old AS (
    SELECT id, status AS old_status, jid AS old_jid, phone AS old_phone,
           last_error AS old_error
    FROM devices
    WHERE worker_id = ANY($1::text[]) AND desired_state = 'connected'
      AND status IN ('connected', 'qr_pending')
    FOR UPDATE
)
UPDATE devices d SET
    status = 'connecting',
    last_seen_at = CASE WHEN d.status = 'connected' THEN now() ELSE d.last_seen_at END,
    qr_code = NULL,
    qr_expires_at = NULL,
    updated_at = now()
FROM old WHERE d.id = old.id
"""
    + _RETURNING
)


async def insert(conn: asyncpg.Connection | asyncpg.Pool, account_id: str, name: str) -> Device:
    row = await conn.fetchrow(INSERT, uuid.uuid4(), account_id, name)
    assert row is not None
    return device_from_row(row)


async def list_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str
) -> list[Device]:
    rows = await conn.fetch(LIST_FOR_ACCOUNT, account_id)
    return [device_from_row(r) for r in rows]


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: uuid.UUID, account_id: str
) -> Device | None:
    row = await conn.fetchrow(GET_FOR_ACCOUNT, device_id, account_id)
    return device_from_row(row) if row is not None else None


Change = Literal["connect", "disconnect", "logout"]
_CHANGES: dict[Change, str] = {"connect": CONNECT, "disconnect": DISCONNECT, "logout": LOGOUT}


async def change_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: uuid.UUID, account_id: str, change: Change
) -> Transition | None:
    """What the user asked for (``connect``, ``disconnect``, ``logout``) applied to
    the device's desired state and status; None when the account has no such device."""
    row = await conn.fetchrow(_CHANGES[change], device_id, account_id)
    return transition_from_row(row) if row is not None else None


async def get_qr_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: uuid.UUID, account_id: str
) -> QrCode | None:
    row = await conn.fetchrow(GET_QR, device_id, account_id)
    return to_model(QrCode, row) if row is not None else None


async def delete_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: uuid.UUID, account_id: str
) -> bool:
    result: str = await conn.execute(DELETE, device_id, account_id)
    return result.endswith(" 1")


async def live_holders(conn: asyncpg.Connection | asyncpg.Pool) -> set[str]:
    """The workers recorded as holding a device shown ``connected`` or ``qr_pending``."""
    return {r["worker_id"] for r in await conn.fetch(LIVE_HOLDERS)}


async def mark_unheld(conn: asyncpg.Connection, worker_ids: Sequence[str]) -> list[Transition]:
    """Show ``connecting`` for the live devices held by ``worker_ids`` (workers
    whose heartbeat is gone); the devices whose status changed."""
    rows = await conn.fetch(MARK_UNHELD, list(worker_ids))
    return [t for t in map(transition_from_row, rows) if t.changed]
