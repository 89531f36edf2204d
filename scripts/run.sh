#!/usr/bin/env bash
# `make run`: servers (embedded where none answers), every service, two device
# workers and the gateway under honcho. Ctrl-C stops all of it, including the
# embedded servers this script started (servers that were already running stay).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}
VAR=${VAR:-var}

"$UV" run --no-sync python scripts/make_dev_env.py
# the servers' URLs and the workers' ports (Procfile): the environment first, then .env
for var in CLARIN_DATABASE_URL CLARIN_REDIS_URL CLARIN_NATS_URL WORKER1_PORT WORKER2_PORT; do
  if [[ -z ${!var:-} ]]; then
    value=$( (grep -E "^$var=" .env || true) | tail -n 1 | cut -d= -f2- | tr -d "\"'")
    [[ -n $value ]] && export "$var=$value"
  fi
done

# the WhatsApp driver of the device workers: `make run DRIVER=neonize`, else
# WORKER_WHATSAPP_DRIVER / WHATSAPP_DRIVER / CLARIN_WHATSAPP_DRIVER from the
# environment, then from .env; the simulator when none is set. honcho's env
# files override the environment, so the choice is written into the one it reads.
driver=${DRIVER:-}
for var in WORKER_WHATSAPP_DRIVER WHATSAPP_DRIVER CLARIN_WHATSAPP_DRIVER; do
  [[ -n $driver ]] && break
  driver=${!var:-}
done
for var in WORKER_WHATSAPP_DRIVER WHATSAPP_DRIVER CLARIN_WHATSAPP_DRIVER; do
  [[ -n $driver ]] && break
  driver=$( (grep -E "^$var=" .env || true) | tail -n 1 | cut -d= -f2- | tr -d "\"' ")
done
driver=${driver:-simulator}
case $driver in
  simulator | neonize) ;;
  *) echo "unknown WhatsApp driver '$driver' (simulator or neonize)" >&2; exit 2 ;;
esac
mkdir -p "$VAR"
{
  cat .env.run
  for var in WORKER_WHATSAPP_DRIVER WHATSAPP_DRIVER CLARIN_WHATSAPP_DRIVER; do
    echo "$var=$driver"
  done
} >"$VAR/run.env"

# NATS passwords per role (infra/nats/auth.conf): the embedded server and the
# Procfile's processes read them from here
for var in NATS_WORKER_PASSWORD NATS_DEVICES_PASSWORD NATS_SERVICE_PASSWORD NATS_GATEWAY_PASSWORD NATS_READER_PASSWORD; do
  if [[ -z ${!var:-} ]]; then
    value=$( (grep -E "^$var=" .env || true) | tail -n 1 | cut -d= -f2- | tr -d "\"'")
    [[ -n $value ]] && export "$var=$value"
  fi
done

"$UV" run --no-sync python -m clarin_devkit.devservers up --var-dir "$VAR" --env-file "$VAR/servers.env" \
  --nats-config infra/nats/auth.conf
stop_servers() { "$UV" run --no-sync python -m clarin_devkit.devservers down --var-dir "$VAR" || true; }
trap stop_servers EXIT

echo "Clarin on http://localhost:${GATEWAY_PORT:-8080} with the $driver driver (Ctrl-C stops it)"
"$UV" run --no-sync honcho start -f Procfile -e "$VAR/run.env","$VAR/servers.env" || true
