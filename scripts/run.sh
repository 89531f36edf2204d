#!/usr/bin/env bash
# `make run`: servers (embedded where none answers), every service, two device
# workers and the gateway under honcho. Ctrl-C stops all of it, including the
# embedded servers this script started (servers that were already running stay).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}
VAR=${VAR:-var}

"$UV" run --no-sync python scripts/make_dev_env.py
# the servers' URLs: the environment first, then .env
for var in CLARIN_DATABASE_URL CLARIN_REDIS_URL CLARIN_NATS_URL; do
  if [[ -z ${!var:-} ]]; then
    value=$(grep -E "^$var=" .env | tail -n 1 | cut -d= -f2- | tr -d "\"'")
    [[ -n $value ]] && export "$var=$value"
  fi
done

# NATS passwords per role (infra/nats/auth.conf): the embedded server and the
# Procfile's processes read them from here
for var in NATS_WORKER_PASSWORD NATS_DEVICES_PASSWORD NATS_SERVICE_PASSWORD NATS_GATEWAY_PASSWORD NATS_READER_PASSWORD; do
  if [[ -z ${!var:-} ]]; then
    value=$(grep -E "^$var=" .env | tail -n 1 | cut -d= -f2- | tr -d "\"'")
    [[ -n $value ]] && export "$var=$value"
  fi
done

"$UV" run --no-sync python -m clarin_common.devservers up --var-dir "$VAR" --env-file "$VAR/servers.env" \
  --nats-config infra/nats/auth.conf
stop_servers() { "$UV" run --no-sync python -m clarin_common.devservers down --var-dir "$VAR" || true; }
trap stop_servers EXIT

echo "Clarin on http://localhost:8080 (Ctrl-C stops it)"
"$UV" run --no-sync honcho start -f Procfile -e .env.run,"$VAR/servers.env" || true
