"""Rate limits in Redis with the ``limits`` library (moving windows).

Redis being down must not take the product down with it: a limiter that cannot
reach Redis lets the request through (fail open), logs a warning, and leaves
Redis alone for ``rate_limit_redis_retry_seconds`` so that requests do not each
pay a connect timeout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool

from clarin_common.errors import RateLimited
from clarin_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Rule:
    """A named limit; ``name`` keeps the keys of different rules apart."""

    name: str
    item: RateLimitItem


class Limiter:
    def __init__(self, settings: GatewaySettings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.retry_after_failure = settings.rate_limit_redis_retry_seconds
        self.rules = {
            "login_email": Rule("login_email", parse(settings.rate_limit_login_per_email)),
            "login_ip": Rule("login_ip", parse(settings.rate_limit_login_per_ip)),
            "register_email": Rule("register_email", parse(settings.rate_limit_register_per_email)),
            "register_ip": Rule("register_ip", parse(settings.rate_limit_register_per_ip)),
            "refresh_ip": Rule("refresh_ip", parse(settings.rate_limit_refresh_per_ip)),
            "send_account": Rule("send_account", parse(settings.rate_limit_send_per_account)),
        }
        self._pool = ConnectionPool.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.rate_limit_redis_timeout,
            socket_timeout=settings.rate_limit_redis_timeout,
        )
        self._storage = RedisStorage(
            "async+" + settings.redis_url,
            implementation="redispy",
            key_prefix="clarin_gw",
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._skip_until = 0.0

    async def aclose(self) -> None:
        await self._pool.disconnect()

    async def check(self, *checks: tuple[str, str]) -> None:
        """Count one hit on each ``(rule, identifier)``; raise :class:`RateLimited`
        with ``Retry-After`` on the first one that is exhausted."""
        if not self.enabled:
            return
        for rule_name, identifier in checks:
            rule = self.rules[rule_name]
            allowed, retry_after = await self._hit(rule, identifier)
            if not allowed:
                log.info("rate_limited", rule=rule_name)
                raise RateLimited(
                    "Too many requests; try again later",
                    headers={"Retry-After": str(retry_after)},
                    details={"retry_after": retry_after},
                )

    async def _hit(self, rule: Rule, identifier: str) -> tuple[bool, int]:
        now = time.monotonic()
        if now < self._skip_until:
            return True, 0
        try:
            if await self._strategy.hit(rule.item, rule.name, identifier):
                return True, 0
            stats = await self._strategy.get_window_stats(rule.item, rule.name, identifier)
        except Exception as exc:
            self._skip_until = now + self.retry_after_failure
            log.warning(
                "rate_limit_storage_unavailable",
                error=repr(exc),
                note="failing open: requests pass unlimited until Redis answers",
            )
            return True, 0
        return False, max(1, math.ceil(stats.reset_time - time.time()))
