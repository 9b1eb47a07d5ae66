#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine, installing and starting what
# it needs: redis-server for the operator-script test, a Docker engine and
# docker-compose for the testcontainers Redis Cluster and the compose stack, and the
# Redis image, built offline (no registry is needed: cluster/images.sh debootstraps
# it and tags it redis:7.0). Every workspace member's tests run (shardcast, the
# testkit, the bench tool, the example app).
#
# Usage: cluster/test.sh [extra cargo test args...]
# Set SHARDCAST_TEST_REDIS_IMAGE to test against another Redis image.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v redis-server >/dev/null || need+=(redis-server)
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
