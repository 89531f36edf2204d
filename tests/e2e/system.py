"""The whole system as subprocesses: every service, two workers and the gateway.

Used by the end-to-end and browser tests. Each process gets a free port and the
run's test servers; logs go to ``test-artifacts/logs/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clarin_devkit.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class System:
    base_url: str
    nats_url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # the gateway's Prometheus endpoint (never on the public port)
    metrics_url: str = ""
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)

    def log(self, name: str) -> str:
        path = ARTIFACTS / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str) -> None:
        """Start (or start again) one process; its log is appended to."""
        cmd, extra = self.commands[name]
        out = (ARTIFACTS / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            cmd, env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def kill(self, name: str) -> None:
        """kill -9, as a crash would."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)


def _script(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [shutil.which(name) or name]


@contextmanager
def run_system(
    database_url: str, redis_url: str, nats_url: str, media_dir: Path, workers: int = 2
) -> Iterator[System]:
    ports = {
        "auth": free_port(),
        "devices": free_port(),
        "messaging": free_port(),
        "leads": free_port(),
        "webhooks": free_port(),
        "campaigns": free_port(),
        "gateway": free_port(),
    }
    metrics_port = free_port()
    env = {
        **os.environ,
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_REDIS_URL": redis_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_MEDIA_DIR": str(media_dir),
        "CLARIN_LOG_JSON": "true",
        "CLARIN_LOG_LEVEL": "INFO",
        "WHATSAPP_DRIVER": "simulator",
        "WORKER_WHATSAPP_DRIVER": "simulator",
        "WORKER_SEND_RATE_PER_SECOND": "50",
        # a send held by a killed worker comes back in seconds, not a minute
        "WORKER_OUTBOX_ACK_WAIT_SECONDS": "5",
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_PORT": str(ports["auth"]),
        "DEVICES_PORT": str(ports["devices"]),
        "MESSAGING_PORT": str(ports["messaging"]),
        "LEADS_PORT": str(ports["leads"]),
        "WEBHOOKS_PORT": str(ports["webhooks"]),
        "CAMPAIGNS_PORT": str(ports["campaigns"]),
        "CAMPAIGNS_LEADS_URL": f"http://127.0.0.1:{ports['leads']}",
        "CAMPAIGNS_DEVICES_URL": f"http://127.0.0.1:{ports['devices']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_DEVICES_URL": f"http://127.0.0.1:{ports['devices']}",
        "GATEWAY_MESSAGING_URL": f"http://127.0.0.1:{ports['messaging']}",
        "GATEWAY_LEADS_URL": f"http://127.0.0.1:{ports['leads']}",
        "GATEWAY_WEBHOOKS_URL": f"http://127.0.0.1:{ports['webhooks']}",
        "GATEWAY_CAMPAIGNS_URL": f"http://127.0.0.1:{ports['campaigns']}",
        "GATEWAY_STATIC_DIR": str(ROOT / "frontend" / "dist"),
        "GATEWAY_METRICS_PORT": str(metrics_port),
        "MESSAGING_DEVICES_URL": f"http://127.0.0.1:{ports['devices']}",
        "MESSAGING_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "LEADS_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        # webhook retries in seconds, not minutes (receivers run on this machine)
        "WEBHOOKS_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOKS_RETRY_MAX_INTERVAL_SECONDS": "2",
        "WEBHOOKS_POLL_INTERVAL_SECONDS": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "auth": (_script("clarin-auth"), {}),
        "devices": (_script("clarin-devices"), {}),
        "messaging": (_script("clarin-messaging"), {}),
        "leads": (_script("clarin-leads"), {}),
        "webhooks": (_script("clarin-webhooks"), {}),
        "campaigns": (_script("clarin-campaigns"), {}),
        "gateway": (_script("clarin-gateway"), {}),
    }
    for i in range(1, workers + 1):
        port = free_port()
        ports[f"worker{i}"] = port
        commands[f"worker{i}"] = (
            _script("clarin-device-worker"),
            {"WORKER_ID": f"e2e-worker-{i}", "WORKER_PORT": str(port)},
        )
    logs = ARTIFACTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    system = System(
        base_url=f"http://127.0.0.1:{ports['gateway']}",
        nats_url=nats_url,
        env=env,
        ports=ports,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        commands=commands,
    )
    try:
        for name in commands:
            (logs / f"{name}.log").write_bytes(b"")
            system.start(name)
        deadline = time.monotonic() + 90
        for name in ports:
            system.wait_ready(name, timeout=max(deadline - time.monotonic(), 1))
        yield system
    finally:
        for proc in system.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in system.procs.values():
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
