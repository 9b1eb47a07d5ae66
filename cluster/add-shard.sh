#!/usr/bin/env bash
# Scale out the local Redis Cluster by one shard: start a new master (+ replicas), join it
# (CLUSTER MEET), attach the replicas once they know their master, move an even share of the
# slots onto it with their keys, then wait until all nodes agree. Prints the new seed list.
#
# Usage: cluster/add-shard.sh [--dir D] [--port P] [--replicas R]
#   --port P      master port (replicas use P+1..P+R); default: highest port in use + 1
#   --replicas R  default: the --replicas given to cluster/start.sh (1)
# Re-running with the same --port finishes that shard.
source "$(dirname "$0")/cluster-cli.sh"
case ${1:-} in -h | --help) sed -n '2,9p' "$0"; exit 0 ;; esac
sc_cluster add-shard --node-conf "$SC_NODE_CONF" "$@"
