#!/usr/bin/env bash
# Stop and remove the docker-compose.cluster.yml stack (containers and its network; the images
# stay). Idempotent. Does not stop dockerd (cluster/dockerd.sh --stop does).
#
# Usage: cluster/compose-down.sh     (COMPOSE_PROJECT_NAME default shardcast, COMPOSE_FILE as compose-up.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-shardcast}
export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.cluster.yml}
if ! docker info >/dev/null 2>&1; then
    echo "docker is not running; nothing to stop" >&2
    exit 0
fi
docker-compose down --remove-orphans --timeout 5 >&2
