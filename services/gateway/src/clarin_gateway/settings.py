"""Gateway settings (``GATEWAY_*`` on top of the common ``CLARIN_*`` ones)."""

from __future__ import annotations

from pathlib import Path

from limits import parse
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings
from clarin_gateway.clientip import Network, parse_networks
from clarin_gateway.proxy.routing import BodyKind


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "gateway"
    port: int = 8080

    # upstream services (docs/LAYOUT.md)
    auth_url: str = "http://127.0.0.1:8001"
    devices_url: str = "http://127.0.0.1:8002"
    messaging_url: str = "http://127.0.0.1:8003"
    leads_url: str = "http://127.0.0.1:8004"
    webhooks_url: str = "http://127.0.0.1:8005"
    campaigns_url: str = "http://127.0.0.1:8006"

    # seconds; connect is short so that a service that is down answers 503 at once,
    # read/write are per chunk (inactivity), so long uploads and downloads still work
    upstream_connect_timeout: float = 2.0
    upstream_read_timeout: float = 30.0
    upstream_write_timeout: float = 30.0
    upstream_pool_timeout: float = 5.0
    upstream_max_connections: int = 200
    upstream_max_keepalive: int = 50

    # the built web app; relative paths are taken from the working directory
    static_dir: str = "frontend/dist"

    # Peers (addresses or CIDR blocks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed: the ingress or load balancer in front of the gateway. None by
    # default outside dev/test (the peer is the client); loopback in dev/test.
    trusted_proxies: list[str] | None = None

    # request bodies, in bytes, enforced while they stream (413 past them)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(16 * 1024 * 1024 + 256 * 1024, ge=1024)
    max_credentials_body_bytes: int = Field(64 * 1024, ge=1024)

    # Prometheus /metrics is never on the public port: it is served on this port
    # (bound to metrics_host) when set, and nowhere when not
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    # rate limits, in the notation of the `limits` library ("20/minute", "5 per second")
    rate_limit_enabled: bool = True
    rate_limit_login_per_email: str = "20/minute"
    rate_limit_login_per_ip: str = "60/minute"
    rate_limit_register_per_email: str = "10/minute"
    rate_limit_register_per_ip: str = "30/minute"
    rate_limit_refresh_per_ip: str = "120/minute"
    rate_limit_send_per_account: str = "600/minute"
    # when Redis does not answer, requests pass unlimited (fail open) and Redis is
    # not asked again for this many seconds
    rate_limit_redis_retry_seconds: float = 5.0
    rate_limit_redis_timeout: float = 1.0

    # merged OpenAPI document
    openapi_cache_seconds: float = 30.0
    openapi_fetch_timeout: float = 2.0

    # WebSocket hub
    ws_send_queue_size: int = 1000
    ws_close_on_token_expiry: bool = True

    @field_validator(
        "rate_limit_login_per_email",
        "rate_limit_login_per_ip",
        "rate_limit_register_per_email",
        "rate_limit_register_per_ip",
        "rate_limit_refresh_per_ip",
        "rate_limit_send_per_account",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse(value)  # raises ValueError on a bad notation
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            parse_networks(value)  # raises ValueError on a bad address or block
        return value

    @model_validator(mode="after")
    def _default_trusted_proxies(self) -> GatewaySettings:
        if self.trusted_proxies is None:
            self.trusted_proxies = ["127.0.0.1", "::1"] if self.is_local else []
        return self

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies or [])

    def body_limit(self, kind: BodyKind) -> int:
        return {
            "json": self.max_body_bytes,
            "upload": self.max_upload_bytes,
            "credentials": self.max_credentials_body_bytes,
        }[kind]

    @property
    def static_path(self) -> Path:
        return Path(self.static_dir).expanduser().resolve()

    def upstreams(self) -> dict[str, str]:
        return {
            "auth": self.auth_url.rstrip("/"),
            "devices": self.devices_url.rstrip("/"),
            "messaging": self.messaging_url.rstrip("/"),
            "leads": self.leads_url.rstrip("/"),
            "webhooks": self.webhooks_url.rstrip("/"),
            "campaigns": self.campaigns_url.rstrip("/"),
        }
