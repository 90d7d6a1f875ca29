#!/usr/bin/env bash
# Install mustache.js (npm `mustache`, the library amp-mustache is built on) into .tools/mustache/
# (git-ignored), for the tests that render amp-list templates against the JSON the server returns.
#
#   bash tools/install-mustache.sh [DEST]
#
# npm checks the tarball against the registry's integrity hash. Idempotent: does nothing when the
# pinned version is already in place.
set -euo pipefail

MUSTACHE_VERSION="4.2.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.tools/mustache}"
STAMP="$DEST/.installed"
WANT="mustache@$MUSTACHE_VERSION"

die() {
    echo "install-mustache: $*" >&2
    exit 1
}

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (install Node.js 18+ and npm)"
done

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$DEST/node_modules/mustache/mustache.js" ]]; then
    exit 0
fi

mkdir -p "$DEST"
rm -f "$STAMP"
npm install --no-audit --no-fund --loglevel=error --prefix "$DEST" "$WANT" >/dev/null \
    || die "npm install $WANT failed"
[[ -f "$DEST/node_modules/mustache/mustache.js" ]] || die "$WANT installed no mustache.js"

echo "$WANT" >"$STAMP"
echo "install-mustache: installed into $DEST ($WANT)"
