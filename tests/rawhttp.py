"""HTTP/1.1 requests with the path sent byte for byte.

httpx (like browsers) removes ``.``/``..`` segments before sending, so it cannot
show what the gateway does with them; an attacker's client does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


async def raw_request(
    base_url: str,
    method: str,
    raw_path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | AsyncIterator[bytes] | None = None,
    timeout: float = 30.0,
) -> RawResponse:
    """Send one request; ``body`` as bytes (Content-Length) or chunks (chunked).

    The answer is read while the body is still being sent, and sending stops once
    it is complete: a server may answer early (413) and close, and the answer
    must not be lost to the reset that follows (plain sockets: asyncio's streams
    drop what they buffered once a write fails).
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("Host", f"{host}:{port}"), ("Connection", "close")]
    hdrs += list((headers or {}).items())
    if isinstance(body, bytes):
        hdrs.append(("Content-Length", str(len(body))))
    elif body is not None:
        hdrs.append(("Transfer-Encoding", "chunked"))
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))

        async def send_all() -> None:
            try:
                await loop.sock_sendall(
                    sock,
                    conn.send(h11.Request(method=method, target=raw_path, headers=hdrs)) or b"",
                )
                if isinstance(body, bytes):
                    await loop.sock_sendall(sock, conn.send(h11.Data(data=body)) or b"")
                elif body is not None:
                    async for chunk in body:
                        await loop.sock_sendall(sock, conn.send(h11.Data(data=chunk)) or b"")
                await loop.sock_sendall(sock, conn.send(h11.EndOfMessage()) or b"")
            except (OSError, h11.LocalProtocolError):
                pass  # the server answered (and closed) before the body was all sent

        sender = asyncio.create_task(send_all())
        try:
            return await asyncio.wait_for(_read_response(conn, sock), timeout)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    finally:
        sock.close()


async def _read_response(conn: h11.Connection, sock: socket.socket) -> RawResponse:
    loop = asyncio.get_running_loop()
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                data = b""
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return RawResponse(status, headers, bytes(body))
