#!/usr/bin/env bash
# `make run`: servers (embedded where none answers), every service, two device
# workers and the gateway under honcho. Ctrl-C stops all of it, including the
# embedded servers this script started (servers that were already running stay).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}
VAR=${VAR:-var}

"$UV" run --no-sync python scripts/make_dev_env.py
set -a
# shellcheck disable=SC1091
source .env
set +a

"$UV" run --no-sync python -m clarin_common.devservers up --var-dir "$VAR" --env-file "$VAR/servers.env"
stop_servers() { "$UV" run --no-sync python -m clarin_common.devservers down --var-dir "$VAR" || true; }
trap stop_servers EXIT

echo "Clarin on http://localhost:8080 (Ctrl-C stops it)"
"$UV" run --no-sync honcho start -f Procfile -e .env.run,"$VAR/servers.env" || true
