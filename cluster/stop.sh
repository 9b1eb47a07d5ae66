#!/usr/bin/env bash
# Stop the local Redis Cluster started by cluster/start.sh: kill every node by its recorded PID
# (SIGTERM, SIGKILL after 5 s) and remove the data dir. Idempotent (no-op if nothing runs).
#
# Usage: cluster/stop.sh [--dir D]      (default dir /tmp/shardcast-cluster)
source "$(dirname "$0")/cluster-cli.sh"
case ${1:-} in -h | --help) sed -n '2,5p' "$0"; exit 0 ;; esac
sc_cluster stop "$@"
