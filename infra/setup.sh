#!/usr/bin/env bash
# Everything a fresh clone needs before the demo or the tests run, in order; each step is idempotent
# and quick when already done:
#   1. the host: Podman + runc, CRIU >= 4.1, nats-server, busybox-static, gcc  (infra/host-setup.sh, root)
#   1b. test-only tools: shellcheck (the Terraform tests lint the cloud-init scripts Terraform renders)
#   2. node_modules from the lockfile                                          (npm ci, when stale)
#   3. the local object-storage servers: Azurite, patched s3rver, GCS emulator (infra/storage-servers-setup.sh)
#   4. the TypeScript build into dist/                                         (tsc)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { printf '[setup] %s\n' "$*"; }

bash infra/host-setup.sh

# Not in host-setup.sh: that script also runs on the deployment's hosts, which have no use for it.
if ! command -v shellcheck >/dev/null; then
  say "installing shellcheck (test/unit/terraform-cli.test.ts)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
else
  say "skip: shellcheck installed"
fi

# npm ci only when the lockfile changed since the last install (it wipes node_modules: slow).
stamp=node_modules/.ums-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "skip: node_modules matches package-lock.json"
else
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

bash infra/storage-servers-setup.sh

say "build (tsc)"
rm -rf dist
npx tsc -p tsconfig.json
say "ready"
