#!/usr/bin/env bash
# Install the official AMP validator for offline use into .tools/amp-validator/ (git-ignored).
#
#   bash tools/install-amp-validator.sh [DEST]
#
# amphtml-validator normally downloads its engine (validator_wasm.js) from the AMP CDN at run time,
# which fails offline. The npm package `next` (15.x; 16 dropped AMP) ships a copy, so we take it from
# `npm pack next` and check it against a pinned sha256. Idempotent: does nothing when the pinned
# versions are already in place.
set -euo pipefail

AMPHTML_VALIDATOR_VERSION="1.0.38"
NEXT_VERSION="15.5.29"
WASM_IN_TARBALL="package/dist/compiled/amphtml-validator/validator_wasm.js"
WASM_SHA256="f1f4629ab36f555f5a9937a5cf00f0ef780bf025883c035d06389b151c896f26"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.tools/amp-validator}"
STAMP="$DEST/.installed"
WANT="amphtml-validator@$AMPHTML_VALIDATOR_VERSION next@$NEXT_VERSION sha256:$WASM_SHA256"

die() {
    echo "install-amp-validator: $*" >&2
    exit 1
}

for tool in node npm tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (install Node.js 18+ and npm)"
done

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$DEST/validator_wasm.js" \
    && -f "$DEST/node_modules/amphtml-validator/index.js" ]]; then
    exit 0
fi

mkdir -p "$DEST"
rm -f "$STAMP"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

npm install --no-audit --no-fund --loglevel=error --prefix "$DEST" \
    "amphtml-validator@$AMPHTML_VALIDATOR_VERSION" >/dev/null \
    || die "npm install amphtml-validator@$AMPHTML_VALIDATOR_VERSION failed"

tarball="$(cd "$WORK" && npm pack --silent --loglevel=error "next@$NEXT_VERSION")" \
    || die "npm pack next@$NEXT_VERSION failed"
tar -xzf "$WORK/$tarball" -C "$WORK" "$WASM_IN_TARBALL" \
    || die "$WASM_IN_TARBALL not found in next@$NEXT_VERSION"
echo "$WASM_SHA256  $WORK/$WASM_IN_TARBALL" | sha256sum --check --status \
    || die "validator_wasm.js from next@$NEXT_VERSION does not match the pinned sha256"
mv -f "$WORK/$WASM_IN_TARBALL" "$DEST/validator_wasm.js"

echo "$WANT" >"$STAMP"
echo "install-amp-validator: installed into $DEST ($WANT)"
