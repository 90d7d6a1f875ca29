#!/usr/bin/env bash
# Build the Opentime image here and check it runs: the local Debian base (tools/build-base-image.sh, cached),
# the project image (Docker's layer cache makes a rerun take seconds), then the demo in a container, checked
# from the host: /healthz, an amp-list answer and an image answer (tools/container_probe.py), the server
# running as the non-root user, Docker's HEALTHCHECK reporting healthy, and the pip CA bundle (a BuildKit
# secret) nowhere in the image. Starts dockerd when it is down. Prints how long each step took.
#
#   tools/container-check.sh        (what .ci/run runs)
#
# Settings: BASE_IMAGE (default opentime-base:bookworm, built here), IMAGE (opentime:check),
# PIP_CA_BUNDLE (default: the cert pip is configured with, `pip config list`).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-opentime-base:bookworm}"
IMAGE="${IMAGE:-opentime:check}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the probe imports app.demo from this checkout

work=$(mktemp -d /var/tmp/opentime-container-check.XXXXXX)
containers=()
cleanup() {
    local id
    for id in "${containers[@]}"; do docker rm -f -v "$id" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

started=$(date +%s%N)
# shellcheck source=tools/docker-lib.sh
source tools/docker-lib.sh

build_image() {
    build_opentime_image "$IMAGE" "$BASE_IMAGE" "$work/build.log"
}

run_demo() {
    local id
    id=$(docker run -d --publish 127.0.0.1::8000 "$IMAGE" opentime serve --demo)
    containers+=("$id")
    echo "$id" >"$work/container"
    port=$(docker port "$id" 8000/tcp | head -n1 | sed 's/.*://')
    base="http://127.0.0.1:$port"
    for _ in $(seq 120); do
        # The banner is printed before uvicorn binds: wait for uvicorn's own word.
        if docker logs "$id" 2>&1 | grep -q 'Application startup complete'; then
            echo "demo answering on $base (container ${id:0:12})"
            return 0
        fi
        [[ $(docker inspect --format '{{.State.Running}}' "$id") == true ]] || break
        sleep 0.5
    done
    echo "the demo did not start:" >&2
    docker logs "$id" >&2
    return 1
}

probe_demo() {
    docker logs "$(cat "$work/container")" >"$work/demo.log" 2>&1
    python3 tools/container_probe.py demo "$base" "$work/demo.log"
}

check_user() {
    local id uid pid1
    id=$(cat "$work/container")
    uid=$(docker exec "$id" id -u)
    pid1=$(docker exec "$id" sh -c "awk '/^Uid:/ {print \$2}' /proc/1/status")
    echo "docker exec id -u: $uid; the server (pid 1) runs as uid $pid1"
    [[ "$uid" != 0 && "$pid1" != 0 ]] || { echo "the container runs as root" >&2; return 1; }
}

wait_healthy() {
    local id status
    id=$(cat "$work/container")
    for _ in $(seq 90); do
        status=$(docker inspect --format '{{.State.Health.Status}}' "$id")
        case "$status" in
            healthy) echo "docker health: healthy"; return 0 ;;
            unhealthy) break ;;
        esac
        sleep 1
    done
    echo "docker health: $status" >&2
    docker inspect --format '{{json .State.Health}}' "$id" >&2
    return 1
}

check_no_secret() {
    local id bundle
    bundle=$(pip_ca_bundle)
    [[ -n "$bundle" ]] || { echo "no pip CA bundle was handed to the build: nothing to look for"; return 0; }
    id=$(docker create "$IMAGE")
    containers+=("$id")
    mkdir -p "$work/rootfs"
    docker export "$id" | tar -x -C "$work/rootfs" 2>/dev/null
    { docker history --no-trunc "$IMAGE"; docker image inspect "$IMAGE"; } >"$work/history"
    python3 tools/container_probe.py no-secret "$bundle" "$work/rootfs" "$work/history"
}

base=""
timed_step "dockerd" start_dockerd
timed_step "base image $BASE_IMAGE" bash tools/build-base-image.sh
timed_step "image $IMAGE" build_image
timed_step "start the demo container" run_demo
timed_step "healthz, amp-list and image from the host" probe_demo
timed_step "non-root user" check_user
timed_step "HEALTHCHECK healthy" wait_healthy
timed_step "CA bundle not in the image" check_no_secret
echo "container-check passed in $(seconds_since "$started") s"
