#!/usr/bin/env bash
# Create infra/compose.env for `docker compose --env-file infra/compose.env ...`
# with a fresh Ed25519 token-signing key pair and a random database password.
# Nothing secret is committed: infra/compose.env is listed in infra/.gitignore.
#
#   infra/scripts/gen-compose-env.sh            # writes infra/compose.env (refuses to overwrite)
#   infra/scripts/gen-compose-env.sh -f         # overwrite
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/compose.env"
if [[ -e "$out" && "${1:-}" != "-f" ]]; then
  echo "$out exists; pass -f to overwrite" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl genpkey -algorithm ed25519 -out "$tmp/private.pem"
openssl pkey -in "$tmp/private.pem" -pubout -out "$tmp/public.pem"
# dotenv (compose and python-dotenv) expands \n inside double quotes.
pem_line() { awk 'BEGIN{ORS="\\n"} {print}' "$1"; }
{
  sed -n '/^# ---- generated below/q;p' "$here/compose.env.example"
  echo "# ---- generated below by infra/scripts/gen-compose-env.sh on $(date -u +%FT%TZ)"
  echo "POSTGRES_PASSWORD=$(openssl rand -hex 24)"
  echo "CLARIN_JWT_PUBLIC_KEY=\"$(pem_line "$tmp/public.pem")\""
  echo "AUTH_JWT_PRIVATE_KEY=\"$(pem_line "$tmp/private.pem")\""
  for role in WORKER DEVICES SERVICE GATEWAY READER; do
    echo "NATS_${role}_PASSWORD=$(openssl rand -hex 24)"
  done
  echo "WEBHOOKS_SECRET_KEY=$(openssl rand 32 | base64 | tr '+/' '-_')"
} >"$out"
chmod 600 "$out"
echo "wrote $out"
