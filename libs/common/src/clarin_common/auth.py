"""JWT: EdDSA (Ed25519) access tokens. Only auth signs; every service verifies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request

from clarin_common.errors import Forbidden, Unauthorized

ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class Principal:
    user_id: str
    account_id: str
    role: Literal["admin", "agent"]
    token_id: str
    # the refresh-token family the token was issued for (claim ``sid``), if any
    session_id: str | None = None
    issued_at: int = 0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def generate_key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as PEM strings: ``(private PKCS8, public SPKI)``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def issue_access_token(
    private_key_pem: str,
    *,
    user_id: str,
    account_id: str,
    role: str,
    ttl: timedelta,
    issuer: str = "clarin",
    session_id: str | None = None,
) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "account_id": account_id,
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
        "iss": issuer,
    }
    if session_id is not None:
        claims["sid"] = session_id
    return jwt.encode(claims, private_key_pem, algorithm=ALGORITHM), int(ttl.total_seconds())


class TokenVerifier:
    def __init__(self, public_key_pem: str, issuer: str = "clarin") -> None:
        self.public_key_pem = public_key_pem
        self.issuer = issuer

    def verify(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key_pem,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Access token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid access token", code="invalid_token") from exc
        role = claims.get("role")
        account_id = claims.get("account_id")
        if role not in ("admin", "agent") or not isinstance(account_id, str):
            raise Unauthorized("Invalid access token", code="invalid_token")
        sid = claims.get("sid")
        iat = claims.get("iat")
        return Principal(
            user_id=str(claims["sub"]),
            account_id=account_id,
            role=role,
            token_id=claims["jti"],
            session_id=sid if isinstance(sid, str) else None,
            issued_at=int(iat) if isinstance(iat, int | float) else 0,
        )


def account_uuid(principal: Principal) -> str:
    """The token's account id in the canonical uuid form tenant rows are keyed by
    (401 ``invalid_token`` when it is not a uuid)."""
    try:
        return str(uuid.UUID(principal.account_id))
    except ValueError as exc:
        raise Unauthorized("Invalid access token", code="invalid_token") from exc


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing bearer token")
    return token.strip()


def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = verifier.verify(bearer_token(request))
    request.state.principal = principal
    return principal


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Only an admin can do this")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
