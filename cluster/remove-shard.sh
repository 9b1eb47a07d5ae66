#!/usr/bin/env bash
# Scale in the local Redis Cluster by one shard: move all slots of the shard's master to the
# other masters (`redis-cli --cluster rebalance --cluster-weight <id>=0`), wait until every node
# agrees, `--cluster del-node` its replicas and then the master, stop their processes, and wait
# until the remaining nodes agree again. Prints the new seed list on stdout.
#
# Usage: cluster/remove-shard.sh [--dir D] --port P
#   P is any node of the shard (normally its master port, e.g. the --port given to add-shard.sh);
#   after a failover the shard's current master is used. Idempotent: if no node of the shard
#   runs any more, it only cleans up leftovers.
# shellcheck disable=SC2086 # lists of port numbers are word-split on purpose
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=""
while (($#)); do
    case $1 in
    --dir) SC_DIR=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done
[[ -n $port ]] || die "--port is required"
require_tools redis-cli

shard=$(cat "$SC_DIR/$port/shard" 2>/dev/null || true)
if [[ -z $shard ]] || ! node_alive "$port"; then
    log "node $port is not running in $SC_DIR; nothing to remove"
    if [[ -d $SC_DIR/$port ]]; then stop_node "$port"; fi
    exit 0
fi
members=""
for p in $(all_ports); do
    if [[ $(cat "$SC_DIR/$p/shard" 2>/dev/null || true) == "$shard" ]]; then members+="$p "; fi
done

t0=$(date +%s%N)
wait_for 30 "the cluster to be healthy" cluster_healthy
masters=$(awk '$3 == "master"' <<<"$AGREED_VIEW")
master=$(for p in $members; do awk -v a="$SC_HOST:$p" -v p="$p" '$1 == a { print p }' <<<"$masters"; done)
[[ -n $master ]] || die "no master found for shard $shard"
(($(wc -l <<<"$masters") > 1)) || die "refusing to remove the last master"
master_addr=$SC_HOST:$master
master_id=$(awk -v a="$master_addr" '$1 == a { print $2 }' <<<"$AGREED_VIEW")
seed=$(seed_port $members) || die "no node outside shard $shard"
log "removing shard $shard: master $master ($master_id), nodes: $members; seed $seed"

slots_of_master() { awk -v a="$master_addr" '$1 == a { print $5 }' <<<"$AGREED_VIEW"; }
master_empty() {
    cluster_agree || return 1
    local s; s=$(slots_of_master)
    [[ $s == - ]] || { PROBLEM="master $master still owns $(count_slots "$s") slots"; return 1; }
}

if [[ $(slots_of_master) != - ]]; then
    log "moving $(count_slots "$(slots_of_master)") slots away from $master"
    if ! cluster_cmd rebalance "$SC_HOST:$seed" --cluster-weight "$master_id=0"; then
        log "rebalance failed; running --cluster fix"
        cluster_cmd fix "$SC_HOST:$seed" --cluster-yes || true
    fi
    wait_for 60 "all nodes to agree after moving slots" cluster_agree
    # Fallback for anything rebalance left behind: reshard the rest to the smallest other master.
    left=$(count_slots "$(slots_of_master)")
    if ((left > 0)); then
        target=$(awk -v a="$master_addr" '$3 == "master" && $1 != a { print $2 }' <<<"$AGREED_VIEW" | head -1)
        log "$left slots left on $master; resharding them to $target"
        cluster_cmd reshard "$SC_HOST:$seed" --cluster-from "$master_id" --cluster-to "$target" \
            --cluster-slots "$left" --cluster-yes
    fi
fi
wait_for 60 "every node to see master $master without slots" master_empty

# Replicas first: a replica cannot forget its own master.
for p in $members; do
    [[ $p == "$master" ]] && continue
    cluster_cmd del-node "$SC_HOST:$seed" "$(node_id "$p")"
done
cluster_cmd del-node "$SC_HOST:$seed" "$master_id"
for p in $members; do stop_node "$p"; done

wait_for 60 "the remaining nodes to agree" cluster_healthy
t=$((($(date +%s%N) - t0) / 1000000))
log "shard $shard removed in $((t / 1000)).$(printf '%03d' $((t % 1000)))s; masters now:"
awk '$3 == "master" { printf "  %s %s\n", $1, $5 }' <<<"$AGREED_VIEW" >&2
print_seeds
