"""Ended sessions: auth's session_revoked events close sockets and refuse tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import connect

from clarin_common.auth import issue_access_token
from clarin_common.auth_events import RevokeReason, SessionRevoked, session_revoked_subject
from clarin_common.events import Envelope
from clarin_common.nats import publish_event
from clarin_common.settings import DEV_JWT_PRIVATE_KEY
from clarin_devkit.testing import auth_headers
from services.gateway.tests.helpers import Gateway, GatewayFactory

from .test_ws import close_code, recv_json


def token(account_id: str, user_id: str, session_id: str, *, issued_ago: int = 0) -> str:
    value, _ = issue_access_token(
        DEV_JWT_PRIVATE_KEY,
        user_id=user_id,
        account_id=account_id,
        role="agent",
        ttl=timedelta(minutes=15),
        session_id=session_id,
    )
    if issued_ago:
        import jwt

        claims = jwt.decode(value, options={"verify_signature": False})
        claims["iat"] -= issued_ago
        value = jwt.encode(claims, DEV_JWT_PRIVATE_KEY, algorithm="EdDSA")
    return value


async def revoke(
    nc: NatsClient,
    account_id: str,
    user_id: str,
    session_ids: list[str] | None,
    reason: RevokeReason = "logout",
) -> None:
    event: Envelope[SessionRevoked] = Envelope(
        type="session_revoked",
        account_id=account_id,
        data=SessionRevoked(
            user_id=user_id,
            session_ids=session_ids,
            issued_before=datetime.now(UTC),
            reason=reason,
        ),
    )
    await publish_event(nc.jetstream(), session_revoked_subject(account_id), event)


def ws(gw: Gateway, value: str) -> connect:
    return connect(f"{gw.ws_url}?token={value}", proxy=None, open_timeout=5)


async def test_an_ended_session_closes_its_sockets_and_tokens(
    gateway: Gateway, nats_client: NatsClient
) -> None:
    account, user = str(uuid.uuid4()), str(uuid.uuid4())
    ended, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        ws(gateway, token(account, user, ended)) as doomed,
        ws(gateway, token(account, user, other)) as kept,
    ):
        await revoke(nats_client, account, user, [ended])
        assert await close_code(doomed, timeout=5) == 4401
        # the user's other session goes on
        await kept.send('{"type": "ping"}')
        assert await recv_json(kept) == {"type": "pong"}
    rest = await gateway.client.get("/api/chats", headers=auth_headers(token(account, user, ended)))
    assert rest.status_code == 401
    assert rest.json()["error"]["code"] == "token_revoked"
    fine = await gateway.client.get("/api/chats", headers=auth_headers(token(account, user, other)))
    assert fine.status_code == 200
    # a new socket with the ended session's token is refused too
    async with ws(gateway, token(account, user, ended)) as late:
        assert await close_code(late) == 4401


async def test_a_disabled_user_loses_every_session(
    gateway: Gateway, nats_client: NatsClient
) -> None:
    account, user, colleague = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        ws(gateway, token(account, user, str(uuid.uuid4()), issued_ago=5)) as first,
        ws(gateway, token(account, user, str(uuid.uuid4()), issued_ago=5)) as second,
        ws(gateway, token(account, colleague, str(uuid.uuid4()), issued_ago=5)) as theirs,
    ):
        await revoke(nats_client, account, user, None, reason="disabled")
        assert await close_code(first) == 4401
        assert await close_code(second) == 4401
        await theirs.send('{"type": "ping"}')
        assert await recv_json(theirs) == {"type": "pong"}
    old = token(account, user, str(uuid.uuid4()), issued_ago=5)
    resp = await gateway.client.get("/api/leads", headers=auth_headers(old))
    assert resp.status_code == 401


async def test_a_replica_started_later_knows_earlier_revocations(
    gateway_factory: GatewayFactory, nats_client: NatsClient
) -> None:
    account, user, session = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await revoke(nats_client, account, user, [session])
    # startup returns once the stream's revocations are known: no waiting here
    async with gateway_factory() as gw:
        resp = await gw.client.get(
            "/api/chats", headers=auth_headers(token(account, user, session))
        )
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "token_revoked"
