#!/usr/bin/env bash
# Create the files the dev overlay's secretGenerator reads
# (k8s/overlays/dev/secrets/, ignored by git): a fresh Ed25519 key pair, a
# random PostgreSQL password, the DSNs of the k8s/dev-deps servers, one NATS
# password per role (infra/nats/auth.conf) and the webhooks' secret-encryption key.
#
#   infra/scripts/gen-k8s-dev-secrets.sh [-f]
#   kubectl apply -k k8s/overlays/dev
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$root/k8s/overlays/dev/secrets"
if [[ -e "$dir/backends.env" && "${1:-}" != "-f" ]]; then
  echo "$dir already holds secrets; pass -f to overwrite" >&2
  exit 1
fi
mkdir -p "$dir"
umask 077
openssl genpkey -algorithm ed25519 -out "$dir/jwt-private.pem"
openssl pkey -in "$dir/jwt-private.pem" -pubout -out "$dir/jwt-public.pem"
openssl rand 32 | base64 | tr '+/' '-_' | tr -d '\n' >"$dir/webhooks-secret-key"
pw="$(openssl rand -hex 24)"
printf '%s' "$pw" >"$dir/postgres-password"
cat >"$dir/backends.env" <<ENV
database-url=postgresql://clarin:${pw}@clarin-postgres:5432/clarin
redis-url=redis://clarin-redis:6379/0
nats-url=nats://clarin-nats:4222
ENV
{
  for role in worker devices service gateway reader; do
    echo "${role}-password=$(openssl rand -hex 24)"
  done
} >"$dir/nats.env"
echo "wrote $dir"
