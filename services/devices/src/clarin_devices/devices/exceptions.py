"""The errors of the devices API (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound, ServiceUnavailable


class DeviceNotFound(NotFound):
    code = "device_not_found"
    message = "Device not found"


class QrNotPending(NotFound):
    code = "qr_not_pending"
    message = "No QR code is pending for this device"


class AlreadyPaired(Conflict):
    code = "already_paired"
    message = "The device is already linked to a number"


class NoPairingCode(ServiceUnavailable):
    message = "The device worker gave no pairing code"
