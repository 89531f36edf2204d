#!/usr/bin/env bash
# The whole suite. Uses PostgreSQL/Redis/NATS on their default local ports when
# they answer; otherwise the fixtures start testcontainers or embedded servers.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${CLARIN_TEST_DATABASE_URL:-} ]] && answers 5432; then
  export CLARIN_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
fi
if [[ -z ${CLARIN_TEST_REDIS_URL:-} ]] && answers 6379; then
  export CLARIN_TEST_REDIS_URL=redis://127.0.0.1:6379/15
fi
if [[ -z ${CLARIN_TEST_NATS_URL:-} ]] && answers 4222; then
  export CLARIN_TEST_NATS_URL=nats://127.0.0.1:4222
fi
mkdir -p test-artifacts
"$UV" run --no-sync pytest "$@"
(cd frontend && ../scripts/with-node.sh npm test --silent)
