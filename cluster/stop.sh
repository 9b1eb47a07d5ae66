#!/usr/bin/env bash
# Stop the local Redis Cluster started by cluster/start.sh: kill every node by its recorded
# PID (SIGTERM, SIGKILL after 5 s) and remove the data dir. Idempotent (no-op if nothing runs).
#
# Usage: cluster/stop.sh [--dir D]      (default dir /tmp/shardcast-cluster)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

while (($#)); do
    case $1 in
    --dir) SC_DIR=$2; shift 2 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

if [[ ! -d $SC_DIR ]]; then
    log "nothing to stop: $SC_DIR does not exist"
    exit 0
fi
for p in $(all_ports); do stop_node "$p"; done
rm -f "$SC_DIR"/{redis-node.conf,cluster.env,seeds,create.log}
if rmdir "$SC_DIR" 2>/dev/null; then log "removed $SC_DIR"; else log "left $SC_DIR: it holds files not made by cluster/*.sh"; fi
