"""Webhook secrets at rest and the signature of a delivery.

A webhook's secret must be usable (it signs every delivery), so it cannot be
hashed like a password; it is encrypted with a key from the settings
(``WEBHOOKS_SECRET_KEY``, Fernet: AES-128-CBC + HMAC-SHA256), so that a copy of
the database alone does not give the secrets away.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SECRET_PREFIX = "whsec_"


class SecretBox:
    """Encrypts with the first key, decrypts with any (key rotation)."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ValueError("at least one key is needed")
        fernets = []
        for i, key in enumerate(parts):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"key {i + 1} is not a Fernet key (urlsafe base64 of 32 bytes)"
                ) from exc
        self._box = MultiFernet(fernets)
        self._decrypt = lru_cache(maxsize=4096)(self._decrypt_uncached)

    def encrypt(self, secret: str) -> str:
        return self._box.encrypt(secret.encode()).decode()

    def _decrypt_uncached(self, token: str) -> str:
        return self._box.decrypt(token.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The secret; raises ``InvalidToken`` when no key opens it."""
        return self._decrypt(token)


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`` (the X-Clarin-Signature)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (used by the tests and documented for other teams)."""
    return hmac.compare_digest(signature(secret, timestamp, body), header)


__all__ = ["InvalidToken", "SecretBox", "generate_secret", "signature", "verify"]
