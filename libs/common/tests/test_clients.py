"""clarin_common.clients.ServiceClient (through the user directory built on it)
against a live stand-in of auth."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from clarin_common.errors import ServiceUnavailable, Unauthorized
from clarin_common.users import UserDirectory
from clarin_devkit.testing import free_port, live_server

ALICE = "6f1c2b5e-3f0a-4c8e-9d51-2a7b1e0c9a44"


def fake_auth() -> FastAPI:
    app = FastAPI()

    @app.get("/api/users")
    async def users(request: Request) -> Response:
        match request.headers.get("authorization"):
            case "Bearer good":
                return JSONResponse({"items": [{"id": ALICE.upper()}]})
            case "Bearer broken":
                return JSONResponse({"error": {"code": "boom"}}, status_code=500)
            case "Bearer garbled":
                return PlainTextResponse("not json")
            case "Bearer shapeless":
                return JSONResponse({"items": [{"name": "no id"}]})
        return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)

    return app


@pytest.fixture(scope="module")
async def auth_url() -> AsyncIterator[str]:
    async with live_server(fake_auth()) as url:
        yield url


async def test_answers_and_failures(auth_url: str) -> None:
    async with UserDirectory(auth_url + "/", timeout=5) as directory:
        assert await directory.user_ids("Bearer good") == {ALICE}
        with pytest.raises(Unauthorized) as refused:
            await directory.user_ids("Bearer nobody")
        assert refused.value.code == "invalid_token"
        for token in ("broken", "garbled", "shapeless"):
            with pytest.raises(ServiceUnavailable) as failed:
                await directory.user_ids(f"Bearer {token}")
            assert failed.value.message.endswith("nothing was changed"), token


async def test_an_unreachable_service_is_503() -> None:
    # a port taken from the free ones and never listened on
    async with UserDirectory(f"http://127.0.0.1:{free_port()}", timeout=5) as directory:
        with pytest.raises(ServiceUnavailable):
            await directory.user_ids("Bearer good")
