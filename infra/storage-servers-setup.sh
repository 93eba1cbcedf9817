#!/usr/bin/env bash
# Installs the local object-storage servers the integration tests and the local stack run.
# Idempotent: safe to run after every `npm ci`. Run from anywhere; works on the repo it lives in.
#
#   Azurite (Azure Blob) ... devDependency `azurite`, nothing to do here.
#   s3rver (S3) ........... devDependency `@20minutes/s3rver`, copied to .tools/s3rver and patched there,
#                             so node_modules stays exactly what the lockfile says.
#   GCS emulator .......... firebase-tools, pinned by infra/storage-servers/package-lock.json, installed into
#                             .tools/gcs-emulator with install scripts off. It is ~700 packages: keeping it out
#                             of the root package keeps `npm ci` small for everyone who does not run GCS tests.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
mkdir -p "$tools"

if [ ! -d "$repo/node_modules/@20minutes/s3rver" ] || [ ! -d "$repo/node_modules/azurite" ]; then
  echo "storage-servers-setup: run 'npm ci' in $repo first (azurite and @20minutes/s3rver are devDependencies)" >&2
  exit 1
fi

# --- s3rver: copy and patch -------------------------------------------------------------------------
# 4.0.4 builds the canonical resource of a path-style bucket request without the trailing slash the AWS SDK
# signed ("/bucket/" becomes "/bucket"), so every bucket-level call (ListObjectsV2, CreateBucket...) fails
# with SignatureDoesNotMatch. The patch keeps the slash when the request path had one.
s3rver_src="$repo/node_modules/@20minutes/s3rver"
s3rver_dst="$tools/s3rver"
s3rver_version="$(node -p "require('$s3rver_src/package.json').version")"
if [ "$s3rver_version" != "4.0.4" ]; then
  echo "storage-servers-setup: expected @20minutes/s3rver 4.0.4, found $s3rver_version; re-check the patch below" >&2
  exit 1
fi
rm -rf "$s3rver_dst.tmp"
cp -R "$s3rver_src" "$s3rver_dst.tmp"
node - "$s3rver_dst.tmp/lib/middleware/authentication.js" <<'EOF'
const fs = require('node:fs');
const file = process.argv[2];
const anchor = "      canonicalizedResource += '/' + ctx.params.bucket;\n";
const patched = anchor + "      // UMS patch: keep the trailing slash of path-style bucket requests (the SDK signs it)\n" +
  "      if (!ctx.params.key && ctx.path.endsWith('/')) canonicalizedResource += '/';\n";
const text = fs.readFileSync(file, 'utf8');
if (text.includes('UMS patch')) process.exit(0);
const at = text.indexOf(anchor);
if (at < 0 || text.indexOf(anchor, at + 1) >= 0) {
  console.error('storage-servers-setup: s3rver authentication.js no longer has the expected code; patch not applied');
  process.exit(1);
}
fs.writeFileSync(file, text.replace(anchor, patched));
EOF
rm -rf "$s3rver_dst"
mv "$s3rver_dst.tmp" "$s3rver_dst"
echo "storage-servers-setup: s3rver $s3rver_version patched in $s3rver_dst"

# --- GCS emulator (firebase-tools) ------------------------------------------------------------------
gcs="$tools/gcs-emulator"
wanted="$(node -p "require('$repo/infra/storage-servers/package.json').dependencies['firebase-tools']")"
have="$(node -p "try { require('$gcs/node_modules/firebase-tools/package.json').version } catch { '' }")"
if [ "$have" = "$wanted" ] && cmp -s "$repo/infra/storage-servers/package-lock.json" "$gcs/package-lock.json"; then
  echo "storage-servers-setup: firebase-tools $have already in $gcs"
else
  mkdir -p "$gcs"
  cp "$repo/infra/storage-servers/package.json" "$repo/infra/storage-servers/package-lock.json" "$gcs/"
  # --ignore-scripts: only the storage emulator's JavaScript is used; no Java, no downloaded jars.
  (cd "$gcs" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "storage-servers-setup: firebase-tools $wanted installed in $gcs"
fi
