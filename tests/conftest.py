from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarin_devkit.testing.plugin import TestServers
from tests.e2e.system import System, run_system


@pytest.fixture(scope="session")
def system(test_servers: TestServers) -> Iterator[System]:
    """The running system. E2E tests isolate themselves by registering their own
    account; they never reset shared state (the services hold consumers)."""
    with (
        tempfile.TemporaryDirectory(prefix="clarin-e2e-media-") as media,
        run_system(
            test_servers.database_url, test_servers.redis_url, test_servers.nats_url, Path(media)
        ) as running,
    ):
        yield running
