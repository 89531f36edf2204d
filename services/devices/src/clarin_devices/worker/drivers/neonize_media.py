"""Fetching the file of an inbound WhatsApp media message, in the worker itself.

whatsmeow's ``DownloadAny`` would run on a child's lane (one Go call at a time):
a large or slow file would hold every other session of that child and trip the
hang watchdog. The file is an AES-256-CBC blob on WhatsApp's media servers whose
keys the message carries, so the worker fetches and decrypts it itself, the way
whatsmeow does (``download.go``: HKDF-SHA256 of ``mediaKey`` with the media
type's label → iv, cipher key, MAC key; the blob ends with a 10-byte HMAC-SHA256
of iv + ciphertext; SHA-256 of the blob and of the plain file are checked).

The URL is built from the message's ``directPath`` on WhatsApp's media host,
never from a URL the sender wrote into the message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DEFAULT_MEDIA_HOST = "https://mmg.whatsapp.net"
ORIGIN = "https://web.whatsapp.com"
MAC_LENGTH = 10

# whatsmeow's MediaType: the HKDF label, and the mms-type of the URL
_KEY_LABELS = {
    "image": (b"WhatsApp Image Keys", "image"),
    "sticker": (b"WhatsApp Image Keys", "image"),
    "video": (b"WhatsApp Video Keys", "video"),
    "audio": (b"WhatsApp Audio Keys", "audio"),
    "document": (b"WhatsApp Document Keys", "document"),
}


class MediaFetchError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class MediaTooLarge(Exception):
    pass


@dataclass(frozen=True)
class MediaRequest:
    """What fetching one file needs (``media_info.download`` of its message)."""

    type: str
    direct_path: str
    media_key: bytes
    file_sha256: bytes
    file_enc_sha256: bytes
    size: int | None

    @classmethod
    def parse(cls, download: str | None) -> MediaRequest:
        if not download:
            raise MediaFetchError("The message says nothing of where its file is", retryable=False)
        try:
            raw: dict[str, Any] = json.loads(download)
            request = cls(
                type=str(raw["type"]),
                direct_path=str(raw.get("direct_path") or ""),
                media_key=base64.b64decode(raw.get("media_key") or ""),
                file_sha256=base64.b64decode(raw.get("file_sha256") or ""),
                file_enc_sha256=base64.b64decode(raw.get("file_enc_sha256") or ""),
                size=int(raw["size"]) if raw.get("size") else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MediaFetchError(f"Unreadable media reference: {exc}", retryable=False) from exc
        if request.type not in _KEY_LABELS:
            raise MediaFetchError(f"No file to fetch for {request.type} messages", retryable=False)
        if not request.direct_path.startswith("/"):
            raise MediaFetchError("The message has no media path", retryable=False)
        if len(request.media_key) != 32:
            raise MediaFetchError("The message has no valid media key", retryable=False)
        return request


def media_keys(media_key: bytes, label: bytes) -> tuple[bytes, bytes, bytes]:
    """(iv, cipher key, MAC key) as whatsmeow's ``getMediaKeys``."""
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=label).derive(media_key)
    return expanded[:16], expanded[16:48], expanded[48:80]


def decrypt(request: MediaRequest, blob: bytes) -> bytes:
    """The plain file of a downloaded blob, every check of whatsmeow's made."""
    if request.file_enc_sha256 and hashlib.sha256(blob).digest() != request.file_enc_sha256:
        raise MediaFetchError("The downloaded file is damaged (checksum)", retryable=True)
    if len(blob) <= MAC_LENGTH:
        raise MediaFetchError("The downloaded file is too short", retryable=True)
    label = _KEY_LABELS[request.type][0]
    iv, cipher_key, mac_key = media_keys(request.media_key, label)
    ciphertext, mac = blob[:-MAC_LENGTH], blob[-MAC_LENGTH:]
    expected = hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:MAC_LENGTH]
    if not hmac.compare_digest(mac, expected):
        raise MediaFetchError("The downloaded file does not match its key", retryable=False)
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        data = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise MediaFetchError("The downloaded file cannot be decrypted", retryable=False) from exc
    if request.file_sha256 and hashlib.sha256(data).digest() != request.file_sha256:
        raise MediaFetchError("The decrypted file is damaged (checksum)", retryable=False)
    return data


def media_url(host: str, request: MediaRequest) -> str:
    mms_type = _KEY_LABELS[request.type][1]
    enc_hash = base64.urlsafe_b64encode(request.file_enc_sha256).decode()
    joiner = "&" if "?" in request.direct_path else "?"
    return f"{host}{request.direct_path}{joiner}hash={enc_hash}&mms-type={mms_type}&__wa-mms="


class MediaFetcher:
    """Downloads files of inbound messages, a few at a time, each bounded in
    size and time."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        host: str = DEFAULT_MEDIA_HOST,
        proxy: str | None = None,
        concurrency: int = 4,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.host = host.rstrip("/")
        self.proxy = proxy
        self._gate = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                proxy=self.proxy,
                timeout=httpx.Timeout(min(30.0, self.timeout)),
                headers={"Origin": ORIGIN, "Referer": ORIGIN + "/"},
                follow_redirects=False,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(self, request: MediaRequest) -> bytes:
        """The plain file; :class:`MediaTooLarge` above ``max_bytes``,
        :class:`MediaFetchError` when it cannot be had."""
        if request.size is not None and request.size > self.max_bytes:
            raise MediaTooLarge(_too_large(request.size, self.max_bytes))
        async with self._gate:
            try:
                async with asyncio.timeout(self.timeout):
                    blob = await self._download(request)
            except TimeoutError as exc:
                raise MediaFetchError(
                    f"The download took longer than {self.timeout:g} s", retryable=True
                ) from exc
            except httpx.HTTPError as exc:
                raise MediaFetchError(
                    f"The download failed: {type(exc).__name__}: {exc}", retryable=True
                ) from exc
        return await asyncio.to_thread(decrypt, request, blob)

    async def _download(self, request: MediaRequest) -> bytes:
        # the blob is the file + up to 16 bytes of padding + the 10-byte MAC
        limit = self.max_bytes + 16 + MAC_LENGTH
        async with self._http().stream("GET", media_url(self.host, request)) as response:
            if response.status_code in (403, 404, 410):
                raise MediaFetchError(
                    f"WhatsApp no longer has this file (HTTP {response.status_code})",
                    retryable=False,
                )
            if response.status_code != 200:
                raise MediaFetchError(
                    f"WhatsApp's media server answered HTTP {response.status_code}",
                    retryable=True,
                )
            announced = response.headers.get("content-length")
            if announced and announced.isdigit() and int(announced) > limit:
                raise MediaTooLarge(_too_large(int(announced), self.max_bytes))
            blob = bytearray()
            async for chunk in response.aiter_bytes():
                blob += chunk
                if len(blob) > limit:
                    raise MediaTooLarge(_too_large(len(blob), self.max_bytes))
        return bytes(blob)


def _too_large(size: int, limit: int) -> str:
    return (
        f"The file is larger than this installation accepts "
        f"({size / 1048576:.1f} MiB, limit {limit / 1048576:.1f} MiB: WORKER_MEDIA_MAX_BYTES)"
    )
