"""Rendezvous (highest random weight) hashing: which live worker owns a device.

Every worker computes the same owner from the same member list, and a worker
joining or leaving moves only the devices it wins or held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def score(worker_id: str, device_id: str) -> int:
    digest = hashlib.blake2b(f"{worker_id}\x00{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(device_id: str, workers: Iterable[str]) -> str | None:
    best: str | None = None
    best_score = -1
    for worker_id in workers:
        value = score(worker_id, device_id)
        if value > best_score or (value == best_score and best is not None and worker_id < best):
            best, best_score = worker_id, value
    return best
