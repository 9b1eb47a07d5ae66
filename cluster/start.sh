#!/usr/bin/env bash
# Start a local Redis Cluster (Debian redis-server on 127.0.0.1, no Docker) and wait until it is
# fully formed: every node agrees on the slot map and sees every master with its replicas, and
# every replica has synced. Prints the seed list (redis://127.0.0.1:7000,...) on stdout.
#
# Usage: cluster/start.sh [--masters N] [--replicas R] [--base-port P] [--dir D]
#   defaults: 3 masters, 1 replica each, ports 7000.. (bus ports +10000), dir /tmp/shardcast-cluster
# Idempotent: a healthy running cluster of the same shape only prints its seeds; leftovers of a
# dead or partial one in D are cleaned up first. Stop with cluster/stop.sh.
source "$(dirname "$0")/cluster-cli.sh"
case ${1:-} in -h | --help) sed -n '2,9p' "$0"; exit 0 ;; esac
sc_cluster start --node-conf "$SC_NODE_CONF" "$@"
