#!/usr/bin/env bash
# One-shot Redis Cluster bootstrap for docker-compose.cluster.yml (the `cluster-init` service).
# Resolves the node hostnames to IPs (CLUSTER MEET needs IPs), waits for every node to answer,
# runs `redis-cli --cluster create ... --cluster-replicas R --cluster-yes` unless the nodes already
# form a cluster, then waits until every node reports cluster_state:ok and sees all masters each
# with R replicas, and `redis-cli --cluster check` passes. Exit 0 = cluster ready.
#
# Usage: bash /cluster/compose-init.sh [--replicas R] [--timeout S] HOST:PORT...
#   e.g. bash /cluster/compose-init.sh --replicas 1 redis-1:6379 redis-2:6379 ... redis-6:6379
# Idempotent: re-running against a formed cluster only re-checks it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

replicas=1 timeout=120 nodes=()
while (($#)); do
    case $1 in
    --replicas) replicas=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) nodes+=("$1"); shift ;;
    esac
done
total=${#nodes[@]}
((total >= 3 * (1 + replicas))) || die "need at least $((3 * (1 + replicas))) nodes for 3 masters with $replicas replica(s)"
((total % (1 + replicas) == 0)) || die "$total nodes cannot be split into shards of 1 master + $replicas replica(s)"
masters=$((total / (1 + replicas)))

resolve_all() {
    local n ip
    ADDRS=()
    for n in "${nodes[@]}"; do
        ip=$(getent ahostsv4 "${n%:*}" | awk 'NR == 1 { print $1 }')
        [[ -n $ip ]] || { PROBLEM="cannot resolve ${n%:*}"; return 1; }
        ADDRS+=("$ip:${n##*:}")
    done
}
addrs_up() {
    local a
    for a in "${ADDRS[@]}"; do
        [[ $(rcli "$a" ping 2>/dev/null) == PONG ]] || { PROBLEM="$a does not answer PING"; return 1; }
    done
}
known_nodes() { rcli "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
formed() { views_agree "${ADDRS[@]}" && view_shape "$masters" "$replicas" && cluster_check "${ADDRS[0]}"; }

wait_for "$timeout" "node names to resolve" resolve_all
log "nodes: ${nodes[*]} -> ${ADDRS[*]}"
wait_for "$timeout" "all $total nodes to answer PING" addrs_up

fresh=0
for a in "${ADDRS[@]}"; do
    if [[ $(known_nodes "$a") == 1 ]]; then fresh=$((fresh + 1)); fi
done
if ((fresh == total)); then
    log "creating cluster: $masters masters, $replicas replica(s) each"
    cluster_cmd create "${ADDRS[@]}" --cluster-replicas "$replicas" --cluster-yes
elif ((fresh > 0)); then
    die "$fresh of $total nodes are not in a cluster but the others are; recreate the stack (docker-compose down)"
else
    log "nodes already form a cluster; checking it"
fi
wait_for "$timeout" "every node to see $masters masters with $replicas replica(s) each" formed
log "cluster ready:"
awk '$3 == "master" { printf "  %s %s\n", $1, $5 }' <<<"$AGREED_VIEW" >&2
