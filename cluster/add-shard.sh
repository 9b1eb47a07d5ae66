#!/usr/bin/env bash
# Scale out the local Redis Cluster by one shard: start a new master (+ replicas), join it with
# `redis-cli --cluster add-node`, attach the replicas (--cluster-slave --cluster-master-id), move
# slots onto it with `redis-cli --cluster rebalance --cluster-use-empty-masters`, then wait until
# all nodes agree (same slot owners everywhere, no open slots, --cluster check passes).
# Prints the new seed list on stdout.
#
# Usage: cluster/add-shard.sh [--dir D] [--port P] [--replicas R]
#   --port P      master port (replicas use P+1..P+R); default: highest port in use + 1
#   --replicas R  default: the --replicas given to cluster/start.sh (1)
# Re-running with the same --port finishes/keeps that shard (idempotent); without --port every
# run adds another shard.
# shellcheck disable=SC2086 # lists of port numbers are word-split on purpose
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port="" replicas=""
while (($#)); do
    case $1 in
    --dir) SC_DIR=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done
require_tools redis-server redis-cli
if [[ -z $replicas ]]; then
    replicas=$(sed -n 's/^REPLICAS=//p' "$SC_DIR/cluster.env" 2>/dev/null || true)
    replicas=${replicas:-1}
fi
[[ $replicas =~ ^[0-9]+$ ]] || die "--replicas must be a number"

t0=$(date +%s%N)
wait_for 30 "the existing cluster to be healthy" cluster_healthy
if [[ -z $port ]]; then
    port=$(($(all_ports | tail -1) + 1))
fi
shard_ports=$(seq "$port" $((port + replicas)))
replica_ports=$(seq $((port + 1)) $((port + replicas)))
seed=$(seed_port $shard_ports) || die "no running cluster node outside ports $port..$((port + replicas))"
log "adding shard $port (replicas: ${replica_ports:-none}) via seed $seed"

for p in $shard_ports; do
    if [[ -d $SC_DIR/$p ]] && [[ $(cat "$SC_DIR/$p/shard" 2>/dev/null || true) != "$port" ]] && node_alive "$p"; then
        die "port $p already belongs to another shard"
    fi
    start_node "$p" "$port"
done
wait_for 20 "new nodes to answer PING" nodes_up $shard_ports

known() { rcli "$seed" cluster nodes | tr -d '\r' | grep -q "^$1 "; }

master_id=$(node_id "$port")
if known "$master_id"; then
    log "master $port already in the cluster"
else
    cluster_cmd add-node "$SC_HOST:$port" "$SC_HOST:$seed"
fi
# Every node should know the new master before its replicas join.
existing=$(live_ports | grep -vxF -f <(echo "$replica_ports") || true)
wait_for 30 "every node to know master $port" nodes_know "$master_id" $existing
# Replicas join as empty nodes and are made replicas once they themselves know the
# master by gossip (`add-node --cluster-slave` sends REPLICATE right after MEET and can
# fail with "Unknown node" when gossip is slower).
for p in $replica_ports; do
    rid=$(node_id "$p")
    if ! known "$rid"; then
        cluster_cmd add-node "$SC_HOST:$p" "$SC_HOST:$seed"
    fi
    if ! rcli "$p" cluster nodes | tr -d '\r' | grep -q "myself,slave $master_id "; then
        wait_for 30 "node $p to know master $port" nodes_know "$master_id" "$p"
        rcli "$p" cluster replicate "$master_id" >&2
    fi
done

# rebalance refuses to run until every node agrees on the configuration.
wait_for 60 "all nodes to know the new shard" cluster_agree
if ! cluster_cmd rebalance "$SC_HOST:$seed" --cluster-use-empty-masters; then
    log "rebalance failed; running --cluster fix and retrying once"
    cluster_cmd fix "$SC_HOST:$seed" --cluster-yes || true
    wait_for 60 "nodes to agree after fix" cluster_agree
    cluster_cmd rebalance "$SC_HOST:$seed" --cluster-use-empty-masters
fi
wait_for 60 "all nodes to agree on the new slot layout" cluster_healthy
t=$((($(date +%s%N) - t0) / 1000000))
log "shard $port added in $((t / 1000)).$(printf '%03d' $((t % 1000)))s; masters now:"
awk '$3 == "master" { printf "  %s %s\n", $1, $5 }' <<<"$AGREED_VIEW" >&2
print_seeds
