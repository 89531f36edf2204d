"""Password hashing and token minting: the auth service's secrets handling."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
import bcrypt

from clarin_common.auth import TokenVerifier, issue_access_token
from clarin_common.contract import User
from clarin_common.errors import Unauthorized


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes (bcrypt>=5 refuses longer input) while a
    # password may be 128 characters of UTF-8. Hashing first keeps every
    # character significant; base64 keeps NUL bytes out of bcrypt's input.
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def _hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def _verify_sync(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
    except ValueError:  # a malformed stored hash never matches
        return False


class PasswordHasher:
    """bcrypt in a worker thread, so hashing never blocks the event loop.

    ``check(password, hash)`` is the bcrypt comparison each verification runs.
    """

    def __init__(
        self, rounds: int, dummy_hash: str, check: Callable[[str, str], bool] = _verify_sync
    ) -> None:
        self.rounds = rounds
        self.dummy_hash = dummy_hash
        self.check = check

    @classmethod
    async def create(cls, rounds: int) -> PasswordHasher:
        # A hash of the same cost as real ones: checking an unknown email against
        # it takes as long as checking a known one, so timing reveals nothing.
        dummy = await anyio.to_thread.run_sync(_hash_sync, secrets.token_urlsafe(16), rounds)
        return cls(rounds, dummy)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(_hash_sync, password, self.rounds)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether ``password`` matches; ``None`` (no such user) costs the same and fails."""
        matches = await anyio.to_thread.run_sync(
            self.check, password, password_hash or self.dummy_hash
        )
        return matches and password_hash is not None


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


class TokenFactory:
    """Signs access tokens and mints opaque refresh tokens."""

    def __init__(
        self,
        private_key_pem: str,
        *,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        issuer: str,
        session_max_age: timedelta | None = None,
    ) -> None:
        self._private_key_pem = private_key_pem
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        # the absolute lifetime of a refresh-token family, from login
        self.session_max_age = session_max_age or refresh_ttl
        self.issuer = issuer

    def access_token(self, user: User, session_id: str | None = None) -> AccessToken:
        token, expires_in = issue_access_token(
            self._private_key_pem,
            user_id=user.id,
            account_id=user.account_id,
            role=user.role,
            ttl=self.access_ttl,
            issuer=self.issuer,
            session_id=session_id,
        )
        return AccessToken(token, expires_in)

    @staticmethod
    def refresh_token() -> tuple[str, str]:
        """A new opaque refresh token and the hash that is stored for it."""
        token = secrets.token_urlsafe(32)
        return token, hash_refresh_token(token)

    def check_verifies_with(self, verifier: TokenVerifier) -> None:
        """Fail fast when the signing key does not match the services' public key."""
        probe = User(
            id=str(uuid.UUID(int=0)),
            account_id=str(uuid.UUID(int=0)),
            email="probe@clarin.invalid",
            name="probe",
            role="agent",
        )
        try:
            verifier.verify(self.access_token(probe).token)
        except Unauthorized as exc:
            raise RuntimeError(
                "AUTH_JWT_PRIVATE_KEY does not match CLARIN_JWT_PUBLIC_KEY / CLARIN_JWT_ISSUER: "
                "every token it signs would be refused"
            ) from exc
