#!/usr/bin/env bash
# Build the local base image opentime-base:bookworm from Debian packages, for machines that reach the Debian
# mirror but no image registry: debootstrap a minimal bookworm (Python 3.11 from Debian) into a folder and
# `docker import` it. A no-op when the image exists and was built from the same recipe, so CI reruns are fast.
#
#   tools/build-base-image.sh            build when missing (or when the recipe below changed)
#   FORCE=1 tools/build-base-image.sh    rebuild
#
# The mirror is the one this machine's apt uses (override with MIRROR=...). The Dockerfile builds on this
# image with --build-arg BASE_IMAGE=opentime-base:bookworm; deploy/*/Dockerfile build PostgreSQL and Redis on it.
set -euo pipefail

IMAGE="${BASE_IMAGE_TAG:-opentime-base:bookworm}"
SUITE=bookworm
# python3-venv: the Dockerfile installs into a virtualenv (Debian's system Python refuses pip, PEP 668).
# ca-certificates: outgoing HTTPS from the server (and apt over https in derived images), as python:*-slim has.
PACKAGES=python3,python3-venv,ca-certificates

apt_mirror() {  # the first Debian (not security) URI in this machine's apt sources
    local uri
    uri=$(grep -hE '^\s*(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | grep -v -- '-security' | grep -E '/debian/?$' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${MIRROR:-$(apt_mirror)}"
MIRROR="${MIRROR%/}"
SECURITY_MIRROR="${SECURITY_MIRROR:-${MIRROR}-security}"
RECIPE=$(printf '%s\n' "$SUITE" "$PACKAGES" "$MIRROR" "v1" | sha256sum | cut -c1-16)

existing=$(docker image inspect --format '{{ index .Config.Labels "org.opentime.base-recipe" }}' "$IMAGE" \
    2>/dev/null || true)
if [[ -z "${FORCE:-}" && "$existing" == "$RECIPE" ]]; then
    echo "$IMAGE is up to date (recipe $RECIPE)"
    exit 0
fi

root=$(mktemp -d /var/tmp/opentime-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "debootstrap $SUITE from $MIRROR into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -n 40 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Derived images (deploy/) install more Debian packages: give them the same mirror and the security updates.
cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# Keep the image small: no package cache, no downloaded indexes (derived images run apt-get update first).
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
APT::Install-Recommends "false";
EOF
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/tmp/*
# Inside a container the host's resolver is bind-mounted; an empty file keeps the image host-neutral.
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL org.opentime.base-recipe=$RECIPE" \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE" >/dev/null
echo "built $IMAGE (recipe $RECIPE): $(docker image inspect --format '{{ .Size }}' "$IMAGE") bytes"
