#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine, installing and starting what
# it needs: redis-server and redis-sentinel (local clusters, one-Redis and Sentinel
# tests), a Docker engine and docker-compose for the testcontainers Redis Cluster and
# the compose stack, the Redis image, built offline (no registry is needed:
# cluster/images.sh debootstraps it and tags it redis:7.0), Chromium for the browser
# tests and the npm packages of the JS client and the browser tests. Every workspace
# member's tests run (shardcast, the testkit, the bench tool, the example app), then
# the JS client's suite and the dashboard's browser test against the binaries the
# cargo tests built.
#
# Usage: cluster/test.sh [extra cargo test args...]
# Set SHARDCAST_TEST_REDIS_IMAGE to test against another Redis image.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v chromium >/dev/null || need+=(chromium)
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v curl >/dev/null || need+=(curl)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v zstd >/dev/null || need+=(zstd)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cluster/dockerd.sh
if [[ -z ${SHARDCAST_TEST_REDIS_IMAGE:-} ]]; then
    cluster/images.sh base
fi

# Cluster tests each start their own cluster and drive load through it; one at a
# time keeps a 2-core machine from starving them.
cargo test --workspace --all-targets "$@" -- --test-threads=1

command -v node >/dev/null || { echo "node not found: the JS client and browser tests need Node 20+" >&2; exit 1; }
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
clients/js/run-tests.sh
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
tests/browser/run-tests.sh
