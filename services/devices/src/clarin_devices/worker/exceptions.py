"""The errors of the device worker and of its WhatsApp drivers.

A :class:`DriverError`'s ``code`` is stable and machine-readable: a refused
``wa.cmd`` answers it as the reply's ``error.code`` (the devices and messaging
services map it to an HTTP answer), and the worker reads a few of them itself
(``session_not_found`` counts as logged out). Raise a named subclass where there
is one; a driver passes on the code its host answered with ``DriverError(message,
code)``.
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
