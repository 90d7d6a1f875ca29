# Shared by tools/container-check.sh and tools/compose-check.sh (sourced, not run): start dockerd when it is
# down, and build the Opentime image with BuildKit and the pip CA bundle as a secret.

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/opentime-dockerd.log}"

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        echo "dockerd is running"
        return 0
    fi
    echo "starting dockerd (log: $DOCKERD_LOG)"
    # Its own session, no terminal, output to a file: it outlives this script, for the next run.
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "dockerd did not come up in 60 s:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2
    return 1
}

build_client() {  # a docker client that builds with BuildKit (RUN --mount, --secret)
    if docker buildx version >/dev/null 2>&1; then
        echo docker
        return 0
    fi
    # Without buildx, Docker 20.10's own client (Debian's docker.io) hands the build to the engine's
    # built-in BuildKit; newer clients refuse.
    local client
    for client in /usr/bin/docker docker; do
        if "$client" version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
            echo "$client"
            return 0
        fi
    done
    echo "no docker client here builds with BuildKit (install buildx or Debian's docker.io client)" >&2
    return 1
}

pip_ca_bundle() {  # the CA bundle pip is configured with (PIP_CA_BUNDLE overrides), if any
    if [[ -n "${PIP_CA_BUNDLE:-}" ]]; then
        echo "$PIP_CA_BUNDLE"
        return
    fi
    python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.cert='\(.*\)'$/\1/p" | head -n1
}

build_opentime_image() {  # build_opentime_image <tag> <base image> <log file>
    local tag=$1 base=$2 log=$3 client bundle secret=()
    client=$(build_client)
    bundle=$(pip_ca_bundle)
    if [[ -n "$bundle" ]]; then
        echo "pip CA bundle $bundle handed to the build as secret pip_ca"
        secret=(--secret "id=pip_ca,src=$bundle")
    fi
    DOCKER_BUILDKIT=1 "$client" build --progress=plain --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
        -t "$tag" . >"$log" 2>&1 || { tail -n 60 "$log" >&2; return 1; }
    grep -cE '^#[0-9]+ CACHED' "$log" | xargs printf '%s build steps from the layer cache\n'
    # Earlier builds of the tag, now untagged: reruns would pile them up (the layer cache stays).
    docker image prune --force --filter label=org.opentime.image=server >/dev/null
    docker image inspect --format "image $tag: {{.Size}} bytes" "$tag"
}

seconds_since() {  # seconds_since <date +%s%N>: "12.3"
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

timed_step() {  # timed_step <name> <command...>: run it, print its duration; a failure ends the script
    local name=$1 t0
    shift
    t0=$(date +%s%N)
    echo "== $name"
    if ! "$@"; then
        echo "FAILED at: $name" >&2
        exit 1
    fi
    echo "== $name: $(seconds_since "$t0") s"
}
