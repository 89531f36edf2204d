"""Where media bytes live: a local directory now, an S3-compatible bucket later."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Protocol

import anyio

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class MediaStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None when there are none."""
        ...

    async def delete(self, key: str) -> None: ...


def media_key(account_id: str, message_id: str) -> str:
    """Keys start with the account, so a bucket policy can scope them per tenant."""
    return f"{account_id}/{message_id}"


class LocalMediaStore:
    """Files under one directory (``CLARIN_MEDIA_DIR``); writes are atomic renames."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key) or ".." in key:
            raise ValueError(f"invalid media key {key!r}")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

        await anyio.to_thread.run_sync(write)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(read)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
