"""A NATS outage, said once per component.

While NATS is away every publish, fetch, KV read and request of a component fails;
logging each one (with a traceback) buries the one thing worth knowing. A
component keeps one :class:`NatsOutage` and reports every NATS call to it:

- the first failure logs ``nats_unavailable`` as a WARNING with the reason;
- the first success after that logs ``nats_restored`` (INFO) with how long it lasted;
- every failure in between is logged at DEBUG only.

``component`` names the part in the log lines (``outbox:leads``,
``consumer:messaging``, ``worker:w1``…). Failures that are not an outage (the
server answered with an error: a wrong revision, a missing key) are the caller's
business: :func:`is_outage` tells them apart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats.errors
import nats.js.errors
import structlog

log = structlog.get_logger(__name__)

_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    # JetStream that does not answer (no stream leader, server away) …
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    # … or a request that timed out (nats.errors.TimeoutError is one too)
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means NATS could not be reached (rather than answered no)."""
    return isinstance(exc, _OUTAGE_ERRORS)


def reason_of(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class NatsOutage:
    """Whether NATS is reachable, as one component last saw it."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException | str, **context: Any) -> None:
        """A NATS call failed: a warning the first time, debug while it lasts."""
        reason = reason_of(exc)
        if self._down_since is not None:
            log.debug("nats_still_unavailable", component=self.component, reason=reason, **context)
            return
        self._down_since = time.monotonic()
        log.warning("nats_unavailable", component=self.component, reason=reason, **context)

    def ok(self) -> None:
        """A NATS call succeeded: ``nats_restored`` once if it had failed."""
        if self._down_since is None:
            return
        seconds = round(time.monotonic() - self._down_since, 1)
        self._down_since = None
        log.info("nats_restored", component=self.component, down_seconds=seconds)
