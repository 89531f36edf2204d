# syntax=docker/dockerfile:1.7
# Clarin gateway image. Build from the repository root:
#   docker build -f infra/docker/gateway.Dockerfile -t clarin/gateway .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- web app ---------------------------------------------------------------
FROM node:20-bookworm-slim AS web
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# ---- dependencies and the workspace members this service needs --------------
FROM python:3.11-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Workspace metadata first: the dependency layer is rebuilt only when the
# lock file or a pyproject changes, not on every source edit. Every member's
# pyproject.toml is needed for uv to see the whole workspace.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY libs/devkit/pyproject.toml libs/devkit/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/auth/pyproject.toml services/auth/pyproject.toml
COPY services/devices/pyproject.toml services/devices/pyproject.toml
COPY services/messaging/pyproject.toml services/messaging/pyproject.toml
COPY services/leads/pyproject.toml services/leads/pyproject.toml
COPY services/webhooks/pyproject.toml services/webhooks/pyproject.toml
COPY services/campaigns/pyproject.toml services/campaigns/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package clarin-gateway
COPY libs/common/ libs/common/
COPY services/gateway/ services/gateway/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package clarin-gateway

# ---- runtime -----------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 clarin \
 && useradd --system --uid 10001 --gid clarin --home-dir /app --no-create-home clarin \
 && mkdir -p /media && chown clarin:clarin /media
WORKDIR /app
# The repository layout is kept (/app/libs, /app/services/<name>, /app/.venv),
# so the editable installs and paths relative to a package (migrations/) work.
COPY --from=build /app /app
COPY --from=web /src/frontend/dist /app/frontend/dist
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLARIN_HOST=0.0.0.0 \
    CLARIN_MEDIA_DIR=/media \
    GATEWAY_STATIC_DIR=/app/frontend/dist
USER 10001:10001
EXPOSE 8080
CMD ["clarin-gateway"]
