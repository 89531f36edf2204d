"""``GET /ws?token=``: the WebSocket of API.md."""

from __future__ import annotations

import contextlib

import jwt
import structlog
from fastapi import APIRouter, WebSocket

from clarin_common.auth import Principal, TokenVerifier
from clarin_common.errors import Unauthorized
from clarin_common.outage import is_outage
from clarin_gateway.deps import GatewayCtx
from clarin_gateway.revocations import RevocationList
from clarin_gateway.ws.hub import CLOSE_INTERNAL, CLOSE_UNAUTHORIZED, Connection

log = structlog.get_logger(__name__)

router = APIRouter()

_SUBJECT_UNSAFE = frozenset(".*> \t\r\n")


def _authenticate(
    websocket: WebSocket, revoked: RevocationList, token: str
) -> tuple[Principal, float | None]:
    verifier: TokenVerifier = websocket.app.state.token_verifier
    principal = verifier.verify(token)
    if not principal.account_id or _SUBJECT_UNSAFE & set(principal.account_id):
        raise Unauthorized("Invalid access token", code="invalid_token")
    revoked.check(principal)
    # verified above; read exp again to close the socket when the token runs out
    claims = jwt.decode(token, options={"verify_signature": False})
    exp = claims.get("exp")
    return principal, float(exp) if isinstance(exp, int | float) else None


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, ctx: GatewayCtx) -> None:
    settings, hub = ctx.settings, ctx.hub
    token = websocket.query_params.get("token", "")
    try:
        principal, expires_at = _authenticate(websocket, ctx.revoked, token)
    except Unauthorized as exc:
        # accept first so that browsers see the close code (a refused handshake is opaque)
        await websocket.accept()
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason=exc.message)
        return
    conn = Connection(
        websocket,
        principal.account_id,
        settings.ws_send_queue_size,
        expires_at if settings.ws_close_on_token_expiry else None,
        user_id=principal.user_id,
        session_id=principal.session_id,
        issued_at=principal.issued_at,
    )
    try:
        await hub.join(conn)
    except Exception as exc:
        if is_outage(exc):
            hub.outage.failed(exc)
        else:
            log.warning("ws_subscribe_failed", error=repr(exc))
        await websocket.accept()
        await websocket.close(code=CLOSE_INTERNAL, reason="Event bus unavailable")
        return
    hub.outage.ok()
    close_code: int | None = None
    try:
        await websocket.accept()
        close_code = await conn.run()
    finally:
        # out of the hub first: no more frames for it while the close frame waits
        with contextlib.suppress(Exception):
            await hub.leave(conn)
    if close_code is not None:
        await conn.close(close_code)
