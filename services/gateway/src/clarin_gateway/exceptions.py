"""The gateway's errors (rendered by the common handler). The gateway keeps no data
of its own, so they live here rather than in a domain package."""

from __future__ import annotations

from clarin_common.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)


class TokenRevoked(Unauthorized):
    code = "token_revoked"
    message = "This session has ended; sign in again"


class NoRoute(NotFound):
    def __init__(self, path: str) -> None:
        super().__init__(f"No API route {path}")


class BadContentLength(BadRequest):
    message = "Content-Length is not a number"


class RequestBodyTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than {limit} bytes", details={"limit_bytes": limit}
        )


class UpstreamTimedOut(ServiceUnavailable):
    def __init__(self, service: str) -> None:
        super().__init__(f"The {service} service did not answer in time")


class UpstreamUnavailable(ServiceUnavailable):
    def __init__(self, service: str) -> None:
        super().__init__(f"The {service} service is unavailable")
