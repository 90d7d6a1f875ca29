#!/usr/bin/env bash
# Install the node tools the test suite runs into .tools/node-test/ (git-ignored):
#   mailparser  a second, independent MIME parser for the .eml output (besides Python's email package)
#   liquidjs    Shopify-compatible Liquid (ships hmac_sha256) for the README's ESP snippet
#
#   bash tools/install-node-test-tools.sh [DEST]
#
# Versions and every transitive dependency are pinned, with integrity hashes, by
# tools/node-test/package-lock.json; `npm ci` installs exactly that. Idempotent: does nothing when the
# installed lockfile is the current one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/tools/node-test"
DEST="${1:-$ROOT/.tools/node-test}"
STAMP="$DEST/.installed"

die() {
    echo "install-node-test-tools: $*" >&2
    exit 1
}

for tool in node npm sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (install Node.js 18+ and npm)"
done

WANT="$(sha256sum "$SPEC/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$DEST/node_modules/mailparser/package.json" \
    && -f "$DEST/node_modules/liquidjs/package.json" ]]; then
    exit 0
fi

mkdir -p "$DEST"
rm -f "$STAMP"
cp "$SPEC/package.json" "$SPEC/package-lock.json" "$DEST/"
npm ci --no-audit --no-fund --loglevel=error --prefix "$DEST" >/dev/null \
    || die "npm ci in $DEST failed"

echo "$WANT" >"$STAMP"
echo "install-node-test-tools: installed into $DEST (lockfile sha256 $WANT)"
