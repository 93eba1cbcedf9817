#!/usr/bin/env bash
# Builds what the cloud runs from this repository's source:
#   <out>/ums-functions-<commit>.zip  the functions' source archive for Cloud Run functions (gen2): dist/core and
#                                     dist/functions, package.json with main = dist/functions/index.js (where the
#                                     buildpack's functions-framework finds the entry points) and without its
#                                     scripts (the buildpack must not run the build), the lockfile
#   <out>/bridge/                     the trigger bridge's image context (Containerfile included):
#                                     podman build -t <registry>/ums/bridge:<commit> <out>/bridge
# Usage: terraform/scripts/package-functions.sh [out-dir]   (default: ./build)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mkdir -p "${1:-build}" && cd "${1:-build}" && pwd)"
commit="$(git -C "$repo" rev-parse --short=12 HEAD)"

cd "$repo"
npm ci --no-audit --no-fund --loglevel=error
npx tsc -p tsconfig.json

stage() { # $1 = dir, $2 = main
  rm -rf "$1" && mkdir -p "$1/dist"
  cp -r dist/core dist/functions "$1/dist/"
  node -e '
    const pkg = require("./package.json");
    // devDependencies stay: npm ci refuses a package.json that disagrees with the lockfile. The cloud
    // installs without them (NPM_CONFIG_OMIT=dev, npm ci --omit=dev); no script runs there.
    delete pkg.scripts; delete pkg.bin;
    pkg.main = process.argv[1];
    process.stdout.write(JSON.stringify(pkg, null, 2) + "\n");
  ' "$2" >"$1/package.json"
  cp package-lock.json "$1/"
  find "$1/dist" -name '*.map' -delete
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage "$work/functions" dist/functions/index.js
zip_file="$out/ums-functions-$commit.zip"
rm -f "$zip_file"
(cd "$work/functions" && python3 -m zipfile -c "$zip_file" package.json package-lock.json dist)
echo "functions source: $zip_file (upload: gcloud storage cp $zip_file gs://<source bucket>/)"

stage "$out/bridge" dist/bridge/main.js
cp -r dist/bridge "$out/bridge/dist/"
find "$out/bridge/dist" -name '*.map' -delete
cp "$repo/terraform/scripts/bridge.Containerfile" "$out/bridge/Containerfile"
echo "bridge image context: $out/bridge (podman build -t <registry>/ums/bridge:$commit $out/bridge)"
