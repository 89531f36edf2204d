# Clarin — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VAR ?= var
export UV_LINK_MODE ?= copy

.PHONY: help
help:
	@echo "make run            install what is missing, start servers, every service, 2 workers, web app on :8080"
	@echo "make run DRIVER=neonize   the same with real WhatsApp (link a phone by its QR code)"
	@echo "make test           lint (ruff, mypy --strict) and the whole test suite (Python, web app, browser)"
	@echo "make dev-backend    like run, without building the web app (use with dev-frontend)"
	@echo "make dev-frontend   Vite dev server on :3000 proxying /api and /ws to :8080"
	@echo "make bench          every benchmark, small (a few minutes): bench/results/latest.md, ratios to same-run ceilings"
	@echo "make soak           10-minute soak: 500 simulated devices, traffic, a worker restarted (SOAK_ARGS=...)"
	@echo "make migrate        apply every service's migrations to CLARIN_DATABASE_URL"
	@echo "make lint / fmt     check / format the code"
	@echo "make asyncapi       regenerate docs/asyncapi.yaml from the event models"
	@echo "make docs           asyncapi, and the settings tables of docs/LAYOUT.md from the settings classes"
	@echo "make up/down/logs/restart/build/db   Docker Compose (db: only PostgreSQL, Redis, NATS)"

# ---- install ------------------------------------------------------------------

.PHONY: uv
uv:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || \
		(python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --break-system-packages --user uv)

.PHONY: install
install: uv
	$(UV) sync --frozen

frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && ../scripts/with-node.sh npm ci --no-audit --no-fund --loglevel=error

.PHONY: frontend
frontend: frontend/node_modules/.package-lock.json
	cd frontend && ../scripts/with-node.sh npm run build

.PHONY: setup
setup: install frontend

# ---- run ----------------------------------------------------------------------

# DRIVER=neonize links real phones (WHATSAPP_DRIVER=neonize in the environment too)
DRIVER ?=
.PHONY: run
run: setup
	DRIVER="$(DRIVER)" bash scripts/run.sh

.PHONY: dev-backend
dev-backend: install
	DRIVER="$(DRIVER)" bash scripts/run.sh

.PHONY: dev-frontend
dev-frontend: frontend/node_modules/.package-lock.json
	cd frontend && ../scripts/with-node.sh npm run dev

.PHONY: servers stop-servers
servers: install
	$(UV) run --no-sync python -m clarin_devkit.devservers up --var-dir $(VAR) --env-file $(VAR)/servers.env
stop-servers:
	$(UV) run --no-sync python -m clarin_devkit.devservers down --var-dir $(VAR)

.PHONY: migrate
migrate: install
	$(UV) run --no-sync python scripts/migrate.py

# ---- quality ------------------------------------------------------------------

.PHONY: test
test: setup lint-python
	bash scripts/test.sh

.PHONY: lint-python
lint-python: install
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	# every test and benchmark too, strict like the code
	$(UV) run --no-sync mypy libs services tests infra/tests bench

.PHONY: lint
lint: lint-python frontend/node_modules/.package-lock.json
	cd frontend && ../scripts/with-node.sh npx tsc --noEmit -p .

.PHONY: fmt
fmt: install
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

.PHONY: asyncapi docs
asyncapi: install
	$(UV) run --no-sync python -m clarin_devkit.asyncapi --write docs/asyncapi.yaml
docs: asyncapi
	$(UV) run --no-sync python -m clarin_devkit.settings_doc --write docs/LAYOUT.md

# ---- benchmarks ---------------------------------------------------------------

# e.g. make bench BENCH_ARGS="--only ceilings,api" or BENCH_ARGS=--readme
BENCH_ARGS ?=
.PHONY: bench
bench: install
	$(UV) run --no-sync python bench/run_all.py $(BENCH_ARGS)

# ---- soak (not part of `make test`) -------------------------------------------------

# the whole system for 10 minutes: 500 simulated devices, steady inbound and outbound
# traffic, worker 1 restarted halfway, RSS of every process every 10 s (bench/README.md)
SOAK_ARGS ?=
.PHONY: soak
soak: install
	$(UV) run --no-sync python bench/soak.py --json-out $(VAR)/soak.json $(SOAK_ARGS)

# ---- Docker Compose -------------------------------------------------------------

COMPOSE ?= docker compose --env-file infra/compose.env
.PHONY: up down logs restart build db
up:
	$(COMPOSE) up -d --build
down:
	$(COMPOSE) down
logs:
	$(COMPOSE) logs -f --tail=200
restart:
	$(COMPOSE) restart
build:
	$(COMPOSE) build
db:
	$(COMPOSE) up -d postgres redis nats
