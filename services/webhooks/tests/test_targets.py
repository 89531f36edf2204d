"""The SSRF guard, with the production rules on (CLARIN_ENV=prod)."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from cryptography.fernet import Fernet

from clarin_common.auth import generate_key_pair, issue_access_token
from clarin_devkit.testing import running_app
from clarin_webhooks.delivery.targets import (
    BlockedTarget,
    Resolver,
    TargetPolicy,
    forbidden_reason,
)
from clarin_webhooks.main import create_app
from clarin_webhooks.settings import DEV_SECRET_KEY, WebhooksSettings
from services.webhooks.tests.helpers import (
    AppEvents,
    SettingsMaker,
    Tenant,
    create_webhook,
    newest_delivery,
)
from tests.webhook_receiver import Receiver

FORBIDDEN = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.251",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",  # documentation
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo (client 127.0.0.1)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address: str) -> None:
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None, address


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def fake_dns(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if host in answers:
            return answers[host]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            raise BlockedTarget(f"{host} does not resolve") from None

    return resolve


PROD = TargetPolicy(
    allow_private=False,
    resolver=fake_dns(
        {
            "hooks.example.com": ["93.184.215.14", "2606:4700:4700::1111"],
            "mixed.example.com": ["93.184.215.14", "10.0.0.5"],
            "internal.example.com": ["192.168.0.10"],
        }
    ),
)


async def test_policy_wants_https_and_public_hosts() -> None:
    await PROD.check_url("https://hooks.example.com/clarin")
    await PROD.check_url("https://93.184.215.14:8443/x")
    for url, words in [
        ("http://hooks.example.com/clarin", "https"),
        ("ftp://hooks.example.com/", "https"),
        ("https:///nohost", "no host"),
        ("https://mixed.example.com/", "private"),
        ("https://internal.example.com/", "private"),
        ("https://127.0.0.1/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://unknown.example.com/", "does not resolve"),
        ("https://hooks.example.com:99999/", "valid URL"),
    ]:
        with pytest.raises(BlockedTarget) as caught:
            await PROD.check_url(url)
        assert words in str(caught.value), (url, str(caught.value))
    # what an internal name resolves to is not told back
    with pytest.raises(BlockedTarget) as caught:
        await PROD.check_url("https://internal.example.com/")
    assert "192.168" not in str(caught.value)


async def test_system_resolver_sees_through_other_spellings() -> None:
    """Names and numeric spellings the system resolves to loopback are refused too."""
    policy = TargetPolicy(allow_private=False)
    for url in ("https://localhost/", "https://2130706433/", "https://0x7f.1/"):
        with pytest.raises(BlockedTarget):
            await policy.check_url(url)


# ---- the service with CLARIN_ENV=prod --------------------------------------------


class Flip:
    """A DNS answer that changes between the check and the delivery (rebinding)."""

    def __init__(self) -> None:
        self.answers = {"hooks.example.com": ["93.184.215.14"]}

    async def __call__(self, host: str, port: int) -> list[str]:
        if host in self.answers:
            return self.answers[host]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            raise BlockedTarget(f"{host} does not resolve") from None


@dataclass(frozen=True)
class Prod:
    """The service under the production rules, an admin of an account, its DNS."""

    client: httpx.AsyncClient
    admin: Tenant
    dns: Flip


@pytest.fixture
async def prod(clean_state: None) -> AsyncIterator[Prod]:
    private, public = generate_key_pair()
    settings = WebhooksSettings(
        env="prod",
        jwt_public_key=public,
        secret_key=Fernet.generate_key().decode(),
        retry_base_seconds=30,
        poll_interval_seconds=0.05,
    )
    account_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    token, _ = issue_access_token(
        private, user_id=user_id, account_id=account_id, role="admin", ttl=timedelta(minutes=5)
    )
    dns = Flip()
    async with running_app(create_app(settings, resolver=dns)) as client:
        yield Prod(client, Tenant(account_id, user_id, token), dns)


def test_prod_refuses_the_development_secret_key() -> None:
    _, public = generate_key_pair()
    with pytest.raises(ValueError, match="WEBHOOKS_SECRET_KEY"):
        WebhooksSettings(env="prod", jwt_public_key=public, secret_key=DEV_SECRET_KEY)
    with pytest.raises(ValueError, match="Fernet"):
        WebhooksSettings(secret_key="not-a-key")


async def test_creation_checks_the_target(prod: Prod) -> None:
    client, headers = prod.client, prod.admin.headers
    for url in (
        "http://hooks.example.com/clarin",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
    ):
        resp = await client.post(
            "/api/webhooks", json={"url": url, "events": ["*"]}, headers=headers
        )
        assert resp.status_code == 422, (url, resp.text)
        (detail,) = resp.json()["error"]["details"]
        assert detail["loc"] == ["body", "url"] and detail["type"] == "url_not_allowed"
    ok = await client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/clarin", "events": ["*"]},
        headers=headers,
    )
    assert ok.status_code == 201, ok.text
    moved = await client.patch(
        f"/api/webhooks/{ok.json()['id']}", json={"url": "https://10.0.0.8/x"}, headers=headers
    )
    assert moved.status_code == 422
    assert (await client.get("/api/webhooks", headers=headers)).json()["items"][0][
        "url"
    ] == "https://hooks.example.com/clarin"


async def test_delivery_checks_the_address_it_connects_to(
    prod: Prod, receiver: Receiver, app_events: AppEvents
) -> None:
    """Public when created, loopback at delivery time: refused, nothing reaches it."""
    client, admin = prod.client, prod.admin
    port = int(receiver.url.rsplit(":", 1)[1])
    hook = await create_webhook(client, admin, f"https://hooks.example.com:{port}/hook")
    prod.dns.answers["hooks.example.com"] = ["127.0.0.1"]
    await app_events.chat_read(admin.account_id)

    row = await newest_delivery(client, admin, hook, lambda d: bool(d["error"]), timeout=10)
    assert row["error"] == (
        "Blocked: hooks.example.com is not allowed: it resolves to a loopback address"
    )
    assert row["status"] == "pending" and row["status_code"] is None
    assert receiver.requests == []


async def test_connects_to_the_checked_address(
    new_tenant: Callable[[], Tenant],
    receiver: Receiver,
    app_events: AppEvents,
    clean_state: None,
    fast_settings: SettingsMaker,
) -> None:
    """The address the policy resolved is the one connected to: a name only our
    resolver knows reaches the receiver, with the name in the Host header."""
    port = int(receiver.url.rsplit(":", 1)[1])
    tenant = new_tenant()
    dns = fake_dns({"receiver.clarin.test": ["127.0.0.1"]})
    async with running_app(create_app(fast_settings(), resolver=dns)) as local:
        resp = await local.post(
            "/api/webhooks",
            json={"url": f"http://receiver.clarin.test:{port}/hook", "events": ["*"]},
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text
        await app_events.chat_read(tenant.account_id)
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
    assert receiver.requests[0].headers["host"] == f"receiver.clarin.test:{port}"


async def test_the_delivery_client_refuses_forbidden_addresses_itself(
    receiver: Receiver,
) -> None:
    """IP literals never reach a resolver: the socket factory still refuses them.
    Under the dev/test rules the same request goes through (the control)."""
    import aiohttp

    from clarin_webhooks.delivery.targets import blocked_reason, guarded_session

    port = int(receiver.url.rsplit(":", 1)[1])
    for url in (f"http://127.0.0.1:{port}/x", f"http://[::ffff:127.0.0.1]:{port}/x"):
        async with guarded_session(TargetPolicy(allow_private=False), 4) as session:
            with pytest.raises(aiohttp.ClientError) as caught:
                async with session.post(url, data=b"{}"):
                    pass
            reason = blocked_reason(caught.value)
            assert reason is not None and "loopback" in reason, caught.value
    assert receiver.requests == []
    async with (
        guarded_session(TargetPolicy(allow_private=True), 4) as session,
        session.post(f"http://127.0.0.1:{port}/x", data=b"{}") as resp,
    ):
        assert resp.status == 200
    assert len(receiver.requests) == 1
