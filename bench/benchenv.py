"""What every benchmark needs to measure the code and nothing else around it.

* Settings are explicit: the Clarin variables of the caller's environment are
  dropped, no `.env` is read (`CLARIN_ENV_FILE` empty, and the processes a
  benchmark starts run in an empty folder besides), whatever `make run` wrote.
  A benchmark passes every setting it depends on itself.
* Servers are private unless named: NATS and Redis not given on the command line
  are started for the run (the embedded servers of `clarin_devkit`) and stopped
  afterwards, so a benchmark never purges the streams of a running system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from clarin_common.db import with_database
from clarin_common.settings import ENV_FILE_VARIABLE
from clarin_devkit.devservers import ephemeral_servers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
_SETTING_PREFIXES = (
    "CLARIN_",
    "GATEWAY_",
    "AUTH_",
    "DEVICES_",
    "WORKER_",
    "MESSAGING_",
    "LEADS_",
    "WEBHOOKS_",
    "CAMPAIGNS_",
    "WHATSAPP_",
)


def clean_environ() -> dict[str, str]:
    """The process environment without any Clarin setting, reading no `.env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    return {**env, ENV_FILE_VARIABLE: ""}


def isolate() -> Path:
    """Drop Clarin settings from this process's environment (and read no `.env`);
    the folder (empty, removed at exit) the benchmark's child processes run in."""
    for key in [k for k in os.environ if k.startswith(_SETTING_PREFIXES)]:
        del os.environ[key]
    os.environ[ENV_FILE_VARIABLE] = ""
    workdir = tempfile.TemporaryDirectory(prefix="clarin-bench-")
    _keep.append(workdir)
    return Path(workdir.name)


_keep: list[tempfile.TemporaryDirectory[str]] = []


@dataclass(frozen=True)
class Servers:
    nats_url: str
    redis_url: str


@contextlib.contextmanager
def servers(nats_url: str | None, redis_url: str | None = "") -> Iterator[Servers]:
    """The NATS and Redis of the run: the given URL, or a private server when it
    is None (an empty ``redis_url`` means the benchmark needs no Redis)."""
    kinds = [k for k, url in (("nats", nats_url), ("redis", redis_url)) if url is None]
    if not kinds:
        yield Servers(nats_url or "", redis_url or "")
        return
    with (
        tempfile.TemporaryDirectory(prefix="clarin-bench-servers-") as tmp,
        ephemeral_servers(Path(tmp), kinds=kinds) as started,
    ):
        yield Servers(nats_url or started.nats_url, redis_url or started.redis_url)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the process started for the run answers ``/readyz`` on ``port``."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("worker did not become ready")


def stop_processes(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process started for the run, then wait (kill after 30 s)."""
    started = list(procs)
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.asynccontextmanager
async def fresh_database(
    admin_url: str, keep: bool = False, prefix: str = "clarin_bench"
) -> AsyncIterator[str]:
    """A throw-away database on the server of ``admin_url`` (its URL), dropped at
    the end unless ``keep``."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield with_database(admin_url, name)
    finally:
        if keep:
            print(f"kept database {name}", file=sys.stderr)
        else:
            conn = await asyncpg.connect(admin_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
