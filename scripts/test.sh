#!/usr/bin/env bash
# The whole suite. Uses the local PostgreSQL when it answers (a fresh database per
# run); NATS and Redis are private servers of the run (the fixtures start them),
# so a running `make run` keeps its streams, consumers, KV buckets and keys.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${CLARIN_TEST_DATABASE_URL:-} ]] && answers 5432; then
  export CLARIN_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
fi
mkdir -p test-artifacts
"$UV" run --no-sync pytest "$@"
(cd frontend && ../scripts/with-node.sh npm test --silent)
