# shellcheck shell=bash
# Sourced by cluster/*.sh: runs the testkit's `shardcast-cluster` CLI (the one
# implementation of cluster administration, shared with the tests), building it
# first when needed. SHARDCAST_CLUSTER_BIN points at a ready binary instead.
set -euo pipefail
SC_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SC_NODE_CONF=$SC_REPO/cluster/redis-node.conf

sc_cluster() {
    local bin=${SHARDCAST_CLUSTER_BIN:-}
    if [[ -z $bin ]]; then
        bin=$SC_REPO/target/release/shardcast-cluster
        # A no-op when up to date; the first run compiles it (about a minute).
        (cd "$SC_REPO" && cargo build -q --release -p shardcast-testkit --no-default-features \
            --bin shardcast-cluster) >&2
    fi
    command -v redis-server >/dev/null || {
        echo "redis-server not found (apt-get install -y redis-server)" >&2
        exit 1
    }
    "$bin" "$@"
}
