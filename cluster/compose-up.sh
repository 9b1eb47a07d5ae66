#!/usr/bin/env bash
# Bring up docker-compose.cluster.yml (6-node Redis Cluster, cluster-init, 3 shardcast, nginx on
# 127.0.0.1:8080) entirely offline: starts dockerd if needed, builds/loads the images, runs
# `docker-compose up -d`, then waits for cluster-init to exit 0 and for nginx and shardcast's
# /healthz to answer through nginx.
#
# Usage: cluster/compose-up.sh [BINARY]      BINARY default: target/release/shardcast (built
#   with the cluster-init CLI, target/release/shardcast-cluster, when it is the default)
#   SHARDCAST_IMAGE=img   use that image instead of building shardcast/shardcast:local from BINARY
#   COMPOSE_PROJECT_NAME  default shardcast;  SHARDCAST_HTTP_PORT  default 8080
#   COMPOSE_FILE          default docker-compose.cluster.yml (colon-separated list allowed)
# Stop with: cluster/compose-down.sh. Idempotent: re-running leaves a running stack as it is.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-shardcast}
export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.cluster.yml}
PORT=${SHARDCAST_HTTP_PORT:-8080}
TIMEOUT=${TIMEOUT:-120}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
command -v docker-compose >/dev/null || die "docker-compose not found (apt-get install -y docker-compose)"
t0=$(date +%s)

"$HERE/dockerd.sh"
"$HERE/images.sh" base
if [[ -z ${SHARDCAST_IMAGE:-} ]]; then
    if [[ -z ${1:-} ]]; then
        (cd "$REPO" && cargo build -q --release --bin shardcast &&
            cargo build -q --release -p shardcast-testkit --no-default-features --bin shardcast-cluster) >&2
    fi
    "$HERE/images.sh" shardcast "${1:-$REPO/target/release/shardcast}"
    export SHARDCAST_IMAGE=shardcast/shardcast:local
fi
log "docker-compose up -d (project $COMPOSE_PROJECT_NAME, shardcast image $SHARDCAST_IMAGE)"
# up blocks until cluster-init has completed (depends_on: service_completed_successfully).
docker-compose up -d >&2

init=$(docker-compose ps -q cluster-init)
[[ -n $init ]] || die "no cluster-init container"
code=$(timeout "$TIMEOUT" docker wait "$init") || die "cluster-init did not finish within ${TIMEOUT}s"
if [[ $code != 0 ]]; then
    docker logs "$init" 2>&1 | tail -20 >&2
    die "cluster-init exited with $code"
fi
log "cluster-init completed (Redis Cluster formed)"

# nginx resolves the shardcast-N names once at startup: if shardcast containers were (re)created
# after nginx started (new image, changed env), restart nginx so it picks up their new addresses.
started() { docker inspect -f '{{.State.StartedAt}}' "$(docker-compose ps -q "$1")"; }
nginx_started=$(started nginx)
for s in shardcast-1 shardcast-2 shardcast-3; do
    if [[ $(started "$s") > "$nginx_started" ]]; then
        log "$s started after nginx; restarting nginx"
        docker-compose restart nginx >&2
        break
    fi
done

wait_http() {
    local url=$1
    for _ in $(seq $((TIMEOUT * 2))); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            log "$url answers 200 ($(($(date +%s) - t0)) s since start)"
            return 0
        fi
        sleep 0.5
    done
    docker-compose ps >&2
    docker-compose logs --tail 20 nginx shardcast-1 >&2 || true
    die "$url did not answer 200 within ${TIMEOUT}s"
}
wait_http "http://127.0.0.1:$PORT/nginx-health"
wait_http "http://127.0.0.1:$PORT/healthz"
docker-compose ps >&2
echo "http://127.0.0.1:$PORT"
