"""Shapes of the pipeline API."""

from __future__ import annotations

from pydantic import BaseModel


class Stage(BaseModel):
    key: str
    name: str
    position: int


class StageList(BaseModel):
    items: list[Stage]
