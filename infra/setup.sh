#!/usr/bin/env bash
# Everything a fresh clone needs before the demo or the tests run, in order; each step is idempotent
# and quick when already done:
#   1. the host: Podman + runc, CRIU >= 4.2, gcc, and the development machine's own tools: nats-server,
#      busybox-static, the test images' clients, containerd 2.x for the simulated CRI nodes
#      (infra/host-setup.sh with UMS_DEV_MACHINE=1, root)
#   1b. test-only tools: shellcheck (the Terraform tests lint the cloud-init scripts Terraform renders)
#   1c. docker.io for the local stack's simulated Docker hosts (infra/docker-host.ts); the system's own
#       docker service is never started
#   2. node_modules from the lockfile                                          (npm ci, when stale)
#   3. the local object-storage servers: Azurite, patched s3rver, GCS emulator (infra/storage-servers-setup.sh)
#   4. the TypeScript build into dist/                                         (tsc)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
say() { printf '[setup] %s\n' "$*"; }

# A development machine: also the tools only the tests, the demo and the local stack use (nats-server, busybox,
# the test images' clients, containerd 2.x for the simulated CRI nodes), which deployment hosts never get.
UMS_DEV_MACHINE=1 bash infra/host-setup.sh

# Not in host-setup.sh: that script also runs on the deployment's hosts, which have no use for it.
if ! command -v shellcheck >/dev/null; then
  say "installing shellcheck (test/unit/terraform-cli.test.ts)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
else
  say "skip: shellcheck installed"
fi

# Not in host-setup.sh either: a deployment host that runs Docker brings its own. The local stack's Docker hosts
# (infra/docker-host.ts) each start a dockerd (and its containerd) of their own, with their own socket and
# state; the system's docker service is never used, and must never start: its postinst would start it (unless
# a policy-rc.d forbids it, as on the reference machine), and on a systemd machine docker.socket would start
# it for the first client of /var/run/docker.sock, e.g. a docker CLI without DOCKER_HOST.
if ! dpkg-query -W -f='${Status}' docker.io 2>/dev/null | grep -q 'install ok installed'; then
  say "installing docker.io (the local stack's Docker hosts)"
  # policy-rc.d (invoke-rc.d and deb-systemd-invoke ask it) keeps the postinst from starting the service; ours
  # only for the install, and only if the machine has none.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=/usr/sbin/policy-rc.d
    trap 'rm -f "$own_policy"' EXIT
    printf '#!/bin/sh\n# infra/setup.sh: no service starts while docker.io installs\nexit 101\n' >"$own_policy"
    chmod 0755 "$own_policy"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
  if [ -n "$own_policy" ]; then
    rm -f "$own_policy"
    trap - EXIT
  fi
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl disable --now docker.socket docker.service containerd.service >/dev/null 2>&1 || true
    say "disabled the system's docker and containerd services (the stack runs its own daemons)"
  fi
  say "installed docker.io $(dpkg-query -W -f='${Version}' docker.io)"
else
  say "skip: docker.io installed"
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
