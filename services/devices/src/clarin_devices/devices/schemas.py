"""Request and answer bodies of /api/devices (``Device`` itself is in clarin_common.contract)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints, field_validator

from clarin_common.contract import Device
from clarin_common.ids import phone_digits

_PHONE_CHARS = re.compile(r"^\+?[0-9 ().-]+$")


class DeviceCreate(BaseModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class DeviceList(BaseModel):
    items: list[Device]


class QrCode(BaseModel):
    code: str
    expires_at: datetime


class PairPhoneRequest(BaseModel):
    phone: str

    @field_validator("phone")
    @classmethod
    def _international_digits(cls, value: str) -> str:
        value = value.strip()
        digits = phone_digits(value)
        if not _PHONE_CHARS.match(value) or not 7 <= len(digits) <= 15:
            raise ValueError("a phone number in international format: 7 to 15 digits")
        return digits


class PairingCode(BaseModel):
    pairing_code: str
