"""The errors of the device worker and of its WhatsApp drivers.

A :class:`DriverError`'s ``code`` is stable and machine-readable: a refused
``wa.cmd`` answers it as the reply's ``error.code`` (the devices and messaging
services map it to an HTTP answer), and the worker reads a few of them itself
(``session_not_found`` counts as logged out). Raise a named subclass; only a code
that a neonize session host answered is passed on as ``DriverError(message, code)``.
"""

from __future__ import annotations


class DriverError(Exception):
    """A driver call or a command failed, for the reason ``code`` names."""

    code: str = "driver_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotConnected(DriverError):
    code = "device_not_connected"

    def __init__(self, message: str = "The device is not connected") -> None:
        super().__init__(message)


class DriverTimeout(DriverError):
    """WhatsApp (the driver) did not answer within ``driver_call_timeout_seconds``."""

    code = "driver_timeout"


class InvalidCommand(DriverError):
    code = "invalid_command"


class InvalidPhone(DriverError):
    code = "invalid_phone"


class InvalidRecipient(DriverError):
    code = "invalid_recipient"


class MediaNotFound(DriverError):
    """A media reference names no object in the worker's media store."""

    code = "media_not_found"


class DriverUnavailable(DriverError):
    """The driver is stopping, or its session host did not start."""

    code = "driver_unavailable"


class AtCapacity(DriverError):
    """Too many sessions are starting (or pairing) at once; try again."""

    code = "capacity"


class HostTimeout(DriverError):
    """A neonize session host did not answer a request in time."""

    code = "timeout"


class SessionNotFound(DriverError):
    """No stored WhatsApp session for the device's number: pair it again (the
    worker reads this as logged out)."""

    code = "session_not_found"


class SessionInUse(DriverError):
    code = "session_in_use"


class AlreadyPaired(DriverError):
    code = "already_paired"


class UnlinkFailed(DriverError):
    """WhatsApp may still list the device on the phone."""

    code = "unlink_failed"


class InvalidMedia(DriverError):
    code = "invalid_media"


class UnsupportedMedia(DriverError):
    code = "unsupported_media"


class NotOwnMessage(DriverError):
    """Only our own messages can be edited or revoked."""

    code = "not_own_message"


class MediaGone(DriverError):
    code = "media_gone"


class MediaUnavailable(DriverError):
    code = "media_unavailable"


class RetryUnsupported(DriverError):
    code = "retry_unsupported"
