#!/usr/bin/env bash
# Start a local Redis Cluster (Debian redis-server, 127.0.0.1, no Docker) and wait until it is
# fully formed: every node reports cluster_state:ok and every node's CLUSTER NODES shows all
# masters, each with its replicas. Prints the seed list (redis://127.0.0.1:7000,...) on stdout.
#
# Usage: cluster/start.sh [--masters N] [--replicas R] [--base-port P] [--dir D]
#   defaults: 3 masters, 1 replica each, ports 7000.. (bus ports +10000), dir /tmp/shardcast-cluster
# Idempotent: if the same cluster is already running and healthy it only prints the seeds;
# leftovers of a dead/partial cluster in D are cleaned up first. Stop with cluster/stop.sh.
# shellcheck disable=SC2086 # lists of port numbers are word-split on purpose
set -euo pipefail
source "$(dirname "$0")/lib.sh"

masters=3 replicas=1 base=7000
while (($#)); do
    case $1 in
    --masters) masters=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --base-port) base=$2; shift 2 ;;
    --dir) SC_DIR=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done
[[ $masters =~ ^[0-9]+$ && $masters -ge 3 ]] || die "--masters must be >= 3 (redis-cli --cluster create needs 3)"
[[ $replicas =~ ^[0-9]+$ ]] || die "--replicas must be a number"
require_tools redis-server redis-cli

total=$((masters * (1 + replicas)))
ports=$(seq "$base" $((base + total - 1)))
mkdir -p "$SC_DIR"

# Already running?
live=$(live_ports)
if [[ -n $live ]]; then
    if [[ $live == "$ports" ]] && cluster_healthy &&
        [[ $(awk '$3 == "master"' <<<"$AGREED_VIEW" | wc -l) -eq $masters ]]; then
        log "cluster in $SC_DIR already running and healthy"
        print_seeds
        exit 0
    fi
    if [[ $live != "$ports" ]]; then
        die "a different cluster runs in $SC_DIR (nodes: $(tr '\n' ' ' <<<"$live")); run cluster/stop.sh --dir $SC_DIR first"
    fi
    log "cluster in $SC_DIR is not healthy ($PROBLEM); recreating it"
fi
for p in $(all_ports); do stop_node "$p"; done

t0=$(date +%s%N)
log "starting $total redis-server nodes on ports $base..$((base + total - 1)) in $SC_DIR"
for p in $ports; do start_node "$p"; done
echo "REPLICAS=$replicas" >"$SC_DIR/cluster.env"
wait_for 20 "nodes to answer PING" nodes_up $ports

# shellcheck disable=SC2046
redis-cli --cluster create $(addrs_of $ports) \
    --cluster-replicas "$replicas" --cluster-yes >"$SC_DIR/create.log" 2>&1 ||
    { cat "$SC_DIR/create.log" >&2; die "redis-cli --cluster create failed"; }

# Label shards by the port of each master; redis-cli chooses which replica goes to which master.
declare -A port_of_id=()
for p in $ports; do port_of_id[$(node_id "$p")]=$p; done
for p in $ports; do
    me=$(rcli "$p" cluster nodes | tr -d '\r' | awk '$3 ~ /myself/ { print ($3 ~ /slave/) ? $4 : "-" }')
    if [[ $me == - ]]; then
        echo "$p" >"$SC_DIR/$p/shard"
    else
        echo "${port_of_id[$me]:?replica $p follows unknown master $me}" >"$SC_DIR/$p/shard"
    fi
done

wait_for 60 "all $total nodes to agree on $masters masters with $replicas replica(s) each" cluster_healthy
t=$((($(date +%s%N) - t0) / 1000000))
log "cluster ready in $((t / 1000)).$(printf '%03d' $((t % 1000)))s"
print_seeds
