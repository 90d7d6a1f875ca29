#!/usr/bin/env bash
# Bring up deploy/compose.yml here (3 Opentime nodes, PostgreSQL, Redis, Varnish; images built from the
# local Debian base) and check opens through the proxy: a profile imported with `opentime import` in a
# container, URLs minted with `opentime sign` from the generated key ring, the amp-list answer (the
# profile's items, never cached by the proxy), the image (cached by the proxy: a HIT the second time),
# then one node killed (every open still 200) and started again (it rejoins the proxy's pool).
# Tears the topology down (volumes too) on exit. Not part of .ci/run: tools/container-check.sh is.
#
#   tools/compose-check.sh
#   VARNISH_VCL=/path/to/test.vcl tools/compose-check.sh   # another VCL (default deploy/varnish/default.vcl)
#   KEEP=1 tools/compose-check.sh      # leave the topology up (then: docker-compose -p opentimecheck -f deploy/compose.yml down -v)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${BASE_IMAGE:-opentime-base:bookworm}"
OPENTIME_IMAGE="${OPENTIME_IMAGE:-opentime:check}"
PROXY_PORT="${PROXY_PORT:-18080}"
PROJECT="${PROJECT:-opentimecheck}"
VARNISH_VCL="$(realpath "${VARNISH_VCL:-deploy/varnish/default.vcl}")"
SENDER=news@example.com
export BASE_IMAGE OPENTIME_IMAGE PROXY_PORT VARNISH_VCL
# Fresh secrets for this run (never in a file): what a sender puts in deploy/.env or a secret store.
POSTGRES_PASSWORD=$(openssl rand -hex 16)
REDIS_PASSWORD=$(openssl rand -hex 16)
OPENTIME_WEBHOOK_SECRETS=$(openssl rand -hex 24)
VARNISH_PURGE_TOKEN=$(openssl rand -hex 16)
OPENTIME_PUBLIC_BASE_URL="http://localhost:$PROXY_PORT"
export POSTGRES_PASSWORD REDIS_PASSWORD OPENTIME_WEBHOOK_SECRETS VARNISH_PURGE_TOKEN OPENTIME_PUBLIC_BASE_URL

[[ -f "$VARNISH_VCL" ]] || { echo "no VCL at $VARNISH_VCL (set VARNISH_VCL)" >&2; exit 1; }
compose=(docker-compose)
command -v docker-compose >/dev/null || compose=(docker compose)
compose+=(--project-name "$PROJECT" --file deploy/compose.yml)

work=$(mktemp -d /var/tmp/opentime-compose-check.XXXXXX)
cleanup() {
    [[ -n "${KEEP:-}" ]] && { echo "KEEP set: the topology is still up (project $PROJECT)"; return; }
    "${compose[@]}" down --volumes --remove-orphans >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
    rm -rf "$work"
}
trap cleanup EXIT
started=$(date +%s%N)
# shellcheck source=tools/docker-lib.sh
source tools/docker-lib.sh

build_images() {
    bash tools/build-base-image.sh
    build_opentime_image "$OPENTIME_IMAGE" "$BASE_IMAGE" "$work/build.log"
    "${compose[@]}" build >"$work/compose-build.log" 2>&1 || { tail -n 40 "$work/compose-build.log" >&2; return 1; }
}

up() {
    "${compose[@]}" up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; "${compose[@]}" logs >&2; return 1; }
    "${compose[@]}" ps
}

healthy_backends() {  # how many of the proxy's backends are healthy
    "${compose[@]}" exec -T varnish varnishadm backend.list 2>/dev/null | grep -ciE '[[:space:]]healthy' || true
}

wait_backends() {  # wait_backends <count>
    for _ in $(seq 120); do
        [[ $(healthy_backends) -ge $1 ]] && { echo "$1 nodes healthy behind the proxy"; return 0; }
        sleep 0.5
    done
    "${compose[@]}" exec -T varnish varnishadm backend.list >&2 || true
    "${compose[@]}" logs --tail 30 >&2
    return 1
}

load_profile() {
    cat >"$work/people.jsonl" <<'EOF'
{"recipient_id": "cust-compose-1", "first_name": "Grace", "loyalty": {"points": 1234, "tier": "gold", "expires_at": "2027-12-31T23:59:59Z"}, "recommendations": [{"name": "Camp mug", "price": 14.0, "sku": "sku-0006", "image": "sku-0006.jpg"}, {"name": "Trekking poles", "price": 99.0, "sku": "sku-0007", "image": "sku-0007.jpg"}]}
EOF
    chmod 0644 "$work/people.jsonl"
    "${compose[@]}" run --rm --no-deps -T -v "$work/people.jsonl:/in/people.jsonl:ro" node1 \
        opentime import /in/people.jsonl
    "${compose[@]}" run --rm --no-deps -T node1 opentime sign --campaign demo --recipient cust-compose-1 \
        >"$work/urls"
    cat "$work/urls"
}

printed_url() {  # printed_url <block name, e.g. list:picks>
    sed -n "s/^$1: //p" "$work/urls"
}

opens_through_proxy() {
    local picks banner
    picks=$(printed_url list:picks)
    banner=$(printed_url img:banner)
    [[ -n "$picks" && -n "$banner" ]] || { echo "opentime sign printed no list:picks / img:banner" >&2; return 1; }
    python3 - "$picks" "$banner" "$SENDER" <<'EOF'
import io, json, sys, urllib.request
from PIL import Image

picks, banner, sender = sys.argv[1:]

def get(url, **headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return answer.status, answer.headers, answer.read()

for attempt in (1, 2):
    status, headers, body = get(picks, **{"AMP-Email-Sender": sender})
    assert status == 200, status
    assert headers.get("X-Opentime-Fallback") is None, dict(headers)
    names = [item["name"] for item in json.loads(body)["items"]]
    assert names == ["Camp mug", "Trekking poles"], names
    assert headers.get("X-Cache") == "PASS", f"the proxy kept per-recipient JSON: {dict(headers)}"
caches = []
for attempt in (1, 2):
    status, headers, body = get(banner)
    assert status == 200, status
    with Image.open(io.BytesIO(body)) as image:
        assert (image.format, image.size) == ("PNG", (600, 200)), (image.format, image.size)
    caches.append(headers.get("X-Cache"))
assert caches == ["MISS", "HIT"], f"the proxy did not cache the image: {caches}"
print(f"through the proxy: picks.json {names} (X-Cache PASS twice), banner.png PNG 600x200 ({', '.join(caches)})")
EOF
}

every_open_answers() {  # every_open_answers <opens>: each open's amp-list JSON answers 200 through the proxy
    local picks code failures=0
    picks=$(printed_url list:picks)
    for _ in $(seq "$1"); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "AMP-Email-Sender: $SENDER" "$picks")
        [[ $code == 200 ]] || failures=$((failures + 1))
    done
    echo "$1 opens through the proxy, $failures not 200"
    [[ $failures == 0 ]]
}

kill_a_node() {
    "${compose[@]}" kill node2 >/dev/null 2>&1
    every_open_answers 30
}

restart_the_node() {
    "${compose[@]}" start node2 >/dev/null 2>&1
    wait_backends 3
    every_open_answers 30
}

timed_step "dockerd" start_dockerd
timed_step "images (base, opentime, postgres, redis, varnish)" build_images
timed_step "compose up" up
timed_step "nodes healthy behind the proxy" wait_backends 3
timed_step "import a profile and sign its URLs (one-shot containers)" load_profile
timed_step "amp-list and image through the proxy" opens_through_proxy
timed_step "node2 killed: opens still answer" kill_a_node
timed_step "node2 started again: it rejoins" restart_the_node
echo "compose-check passed in $(seconds_since "$started") s"
