#!/usr/bin/env bash
# Scale in the local Redis Cluster by one shard: move every slot of the shard's master to the
# other masters, make every remaining node forget the shard's nodes, stop them, and wait until
# the remaining nodes agree. Prints the new seed list.
#
# Usage: cluster/remove-shard.sh [--dir D] --port P
#   P is any node of the shard (after a failover the shard's current master is emptied).
#   Idempotent: if the node does not run any more, it only cleans up leftovers.
source "$(dirname "$0")/cluster-cli.sh"
case ${1:-} in -h | --help) sed -n '2,8p' "$0"; exit 0 ;; esac
sc_cluster remove-shard "$@"
