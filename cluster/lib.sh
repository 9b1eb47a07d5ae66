# shellcheck shell=bash
# Shared helpers for cluster/*.sh (local Redis Cluster on 127.0.0.1 with Debian's redis-server).
# Usage: source "$(dirname "$0")/lib.sh"   (sourced, never executed; callers run with set -euo pipefail)
#
# State layout in $SC_DIR (default /tmp/shardcast-cluster):
#   redis-node.conf       copy of cluster/redis-node.conf (included by every node)
#   cluster.env           REPLICAS=<default replicas per shard for add-shard.sh>
#   seeds                 redis://127.0.0.1:P,... of all live nodes
#   <port>/redis.conf     per-node config (restart a killed node with: redis-server <dir>/<port>/redis.conf)
#   <port>/redis.pid      PID written by redis-server (all stopping is done by this PID)
#   <port>/shard          shard label = port of the shard's original master; a shard is one master
#                         plus its replicas; after a failover the roles swap inside the shard
#   <port>/redis.log, <port>/nodes.conf

set -euo pipefail

SC_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SC_HOST=127.0.0.1
SC_DIR=${SC_DIR:-/tmp/shardcast-cluster}
SC_SLOTS=16384
PROBLEM=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# rcli NODE ARGS...: NODE is a port on $SC_HOST or HOST:PORT.
rcli() {
    local n=$1; shift
    if [[ $n == *:* ]]; then redis-cli -h "${n%:*}" -p "${n##*:}" "$@"; else redis-cli -h "$SC_HOST" -p "$n" "$@"; fi
}
addrs_of() { local p; for p in "$@"; do echo "$SC_HOST:$p"; done; }

# ---------------------------------------------------------------- processes

node_pid() { local f="$SC_DIR/$1/redis.pid"; [[ -s $f ]] && tr -dc '0-9' <"$f"; }

# True if PID is alive and is the redis-server of that port (guards against PID reuse).
pid_is_node() {
    local pid=$1 port=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server.*:$port\b"
}

node_alive() { local pid; pid=$(node_pid "$1") || return 1; pid_is_node "$pid" "$1"; }

# Ports of all node dirs in $SC_DIR whose redis-server is running, ascending.
live_ports() {
    local d p
    for d in "$SC_DIR"/[0-9]*/; do
        [[ -d $d ]] || continue
        p=$(basename "$d")
        if node_alive "$p"; then echo "$p"; fi
    done | sort -n
}

# All node dirs, running or not.
all_ports() {
    local d
    for d in "$SC_DIR"/[0-9]*/; do if [[ -d $d ]]; then basename "$d"; fi; done | sort -n
}

port_in_use() { (exec 3<>"/dev/tcp/$SC_HOST/$1") 2>/dev/null; }

# start_node PORT [SHARD]: start one daemonized node (no-op if it already runs).
start_node() {
    local port=$1 shard=${2:-} d="$SC_DIR/$1"
    if node_alive "$port"; then
        log "node $port already running (pid $(node_pid "$port"))"
    else
        port_in_use "$port" && die "port $port is in use by a process not managed in $SC_DIR"
        port_in_use $((port + 10000)) && die "cluster bus port $((port + 10000)) is in use"
        rm -rf "$d"
        mkdir -p "$d"
        cp "$SC_LIB_DIR/redis-node.conf" "$SC_DIR/redis-node.conf"
        cat >"$d/redis.conf" <<EOF
include $SC_DIR/redis-node.conf
port $port
dir $d
pidfile $d/redis.pid
logfile $d/redis.log
EOF
        redis-server "$d/redis.conf"
    fi
    if [[ -n $shard ]]; then echo "$shard" >"$d/shard"; fi
}

node_up() { node_alive "$1" && [[ $(rcli "$1" ping 2>/dev/null) == PONG ]]; }
nodes_up() {
    local p
    for p in "$@"; do node_up "$p" || { PROBLEM="node $p not answering PING yet"; return 1; }; done
}

# stop_node PORT: SIGTERM by recorded PID (SIGKILL after 5 s), then delete its data dir.
stop_node() {
    local port=$1 pid
    if pid=$(node_pid "$port") && pid_is_node "$pid" "$port"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_is_node "$pid" "$port" || break; sleep 0.1; done
        if pid_is_node "$pid" "$port"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
        log "stopped node $port (pid $pid)"
    fi
    rm -rf "${SC_DIR:?}/$port"
}

# ---------------------------------------------------------------- cluster views

node_id() { rcli "$1" cluster myid | tr -d '\r'; }

# Canonical, sorted view of CLUSTER NODES as seen from NODE, one line per cluster node:
#   <ip:port> <id> <master|slave> <master-id|-> <slots,...|->
# plus "ERR ..." lines for failing/handshaking nodes, broken links or open (migrating/importing) slots.
node_view() {
    local out
    out=$(rcli "$1" cluster nodes 2>/dev/null) || return 1
    [[ -n $out ]] || return 1
    tr -d '\r' <<<"$out" | awk '
        NF >= 8 {
            addr = $2; sub(/@.*/, "", addr)
            nf = split($3, f, ","); role = "unknown"
            for (i = 1; i <= nf; i++) {
                if (f[i] == "master" || f[i] == "slave") role = f[i]
                if (f[i] == "fail" || f[i] == "fail?" || f[i] == "handshake" || f[i] == "noaddr")
                    print "ERR node " addr " (" $1 ") has flags " $3
            }
            if ($8 != "connected") print "ERR node " addr " link " $8
            slots = ""
            for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) { print "ERR open slot " $i " on " addr; continue }
                slots = slots (slots == "" ? "" : ",") $i
            }
            print addr, $1, role, $4, (slots == "" ? "-" : slots)
        }' | LC_ALL=C sort
}

# Number of slots in "a-b,c,..." ("-" = none).
count_slots() {
    [[ $1 == - ]] && { echo 0; return; }
    tr ',' '\n' <<<"$1" | awk -F- '{ n += (NF == 2 ? $2 - $1 + 1 : 1) } END { print n + 0 }'
}

# views_agree IP:PORT...: every given node answers, reports cluster_state:ok, and all of them
# have the same view (same nodes, roles, masters, slot owners; no failing node, no open slot),
# and that view contains exactly the given nodes. Sets AGREED_VIEW.
AGREED_VIEW=""
views_agree() {
    local a view first="" state want
    (($#)) || { PROBLEM="no nodes"; return 1; }
    for a in "$@"; do
        state=$(rcli "$a" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:' || true)
        [[ $state == cluster_state:ok ]] || { PROBLEM="node $a: ${state:-no answer}"; return 1; }
        view=$(node_view "$a") || { PROBLEM="node $a: CLUSTER NODES failed"; return 1; }
        if grep -q '^ERR' <<<"$view"; then PROBLEM="node $a sees: $(grep '^ERR' <<<"$view" | head -1)"; return 1; fi
        if [[ -z $first ]]; then
            first=$a AGREED_VIEW=$view
        elif [[ $view != "$AGREED_VIEW" ]]; then
            PROBLEM="node $a and node $first disagree: $(diff <(echo "$AGREED_VIEW") <(echo "$view") | grep '^[<>]' | head -2 | tr '\n' ' ')"
            return 1
        fi
    done
    want=$(printf '%s\n' "$@" | LC_ALL=C sort)
    if [[ $(awk '{print $1}' <<<"$AGREED_VIEW") != "$want" ]]; then
        PROBLEM="cluster has nodes $(awk '{print $1}' <<<"$AGREED_VIEW" | tr '\n' ' ')but expected $(tr '\n' ' ' <<<"$want")"
        return 1
    fi
}

# view_shape MASTERS REPLICAS: AGREED_VIEW has exactly MASTERS masters, all owning slots and
# together all 16384, each with exactly REPLICAS replicas.
view_shape() {
    local want_m=$1 want_r=$2 total=0 n=0 id slots r
    while read -r id slots; do
        [[ $slots != - ]] || { PROBLEM="master $id owns no slots"; return 1; }
        total=$((total + $(count_slots "$slots"))) n=$((n + 1))
        r=$(awk -v m="$id" '$3 == "slave" && $4 == m' <<<"$AGREED_VIEW" | wc -l)
        ((r == want_r)) || { PROBLEM="master $id has $r replicas, want $want_r"; return 1; }
    done < <(awk '$3 == "master" { print $2, $5 }' <<<"$AGREED_VIEW")
    ((n == want_m)) || { PROBLEM="$n masters, want $want_m"; return 1; }
    ((total == SC_SLOTS)) || { PROBLEM="only $total of $SC_SLOTS slots assigned"; return 1; }
}

# nodes_know ID NODE...: every given node lists node ID (handshake finished).
nodes_know() {
    local id=$1 n; shift
    for n in "$@"; do
        rcli "$n" cluster nodes 2>/dev/null | tr -d '\r' | grep "^$id " | grep -qv handshake ||
            { PROBLEM="node $n does not know $id yet"; return 1; }
    done
}

# cluster_agree: views_agree over all live nodes of the local cluster in $SC_DIR.
cluster_agree() {
    local ports
    ports=$(live_ports)
    [[ -n $ports ]] || { PROBLEM="no live nodes in $SC_DIR"; return 1; }
    # shellcheck disable=SC2046,SC2086
    views_agree $(addrs_of $ports)
}

# cluster_healthy: cluster_agree, plus all 16384 slots covered, plus for every shard label
# exactly one master that owns slots and all other members are its replicas (so a 3x1
# cluster is healthy only once every node sees 3 masters each with 1 replica), plus
# `redis-cli --cluster check` passes.
cluster_healthy() {
    cluster_agree || return 1
    local total=0 addr port id role master slots shard m mid
    declare -A shard_master=() shard_of=() id_of=() role_of=() master_of=()
    while read -r addr id role master slots; do
        port=${addr##*:}
        id_of[$port]=$id role_of[$port]=$role master_of[$port]=$master
        shard=$(cat "$SC_DIR/$port/shard" 2>/dev/null || true)
        [[ -n $shard ]] || { PROBLEM="node $port has no shard label"; return 1; }
        shard_of[$port]=$shard
        if [[ $role == master ]]; then
            [[ -z ${shard_master[$shard]:-} ]] || { PROBLEM="shard $shard has two masters"; return 1; }
            [[ $slots != - ]] || { PROBLEM="master $port owns no slots"; return 1; }
            shard_master[$shard]=$port
            total=$((total + $(count_slots "$slots")))
        fi
    done <<<"$AGREED_VIEW"
    ((total == SC_SLOTS)) || { PROBLEM="only $total of $SC_SLOTS slots assigned"; return 1; }
    for port in "${!shard_of[@]}"; do
        shard=${shard_of[$port]}
        m=${shard_master[$shard]:-}
        [[ -n $m ]] || { PROBLEM="shard $shard has no master"; return 1; }
        [[ $port == "$m" ]] && continue
        mid=${id_of[$m]}
        [[ ${role_of[$port]} == slave && ${master_of[$port]} == "$mid" ]] ||
            { PROBLEM="node $port is not yet a replica of $m (shard $shard)"; return 1; }
    done
    cluster_check "$(head -1 <<<"$AGREED_VIEW" | awk '{print $1}')"
}

# cluster_check IP:PORT: `redis-cli --cluster check` passes without [ERR] or [WARNING].
cluster_check() {
    local out
    if ! out=$(redis-cli --cluster check "$1" 2>&1) || grep -qE '\[ERR\]|\[WARNING\]' <<<"$out"; then
        PROBLEM="redis-cli --cluster check: $(grep -E '\[ERR\]|\[WARNING\]' <<<"$out" | head -1 | sed 's/\x1b\[[0-9;]*m//g')"
        return 1
    fi
}

# wait_for TIMEOUT_S DESCRIPTION CMD...: poll CMD every 0.2 s; CMD sets PROBLEM when it fails.
wait_for() {
    local timeout=$1 desc=$2 start last="" t
    shift 2
    start=$(date +%s%N)
    log "waiting for $desc (timeout ${timeout}s)"
    while true; do
        PROBLEM=""
        if "$@"; then
            t=$((($(date +%s%N) - start) / 1000000))
            log "  ok: $desc after $((t / 1000)).$(printf '%03d' $((t % 1000)))s"
            return 0
        fi
        if (($(date +%s%N) - start > timeout * 1000000000)); then
            die "timed out after ${timeout}s waiting for $desc: $PROBLEM"
        fi
        if [[ $PROBLEM != "$last" ]]; then log "  ... $PROBLEM"; last=$PROBLEM; fi
        sleep 0.2
    done
}

# Any live node except the given ports (a seed for redis-cli --cluster).
seed_port() {
    local p x skip
    for p in $(live_ports); do
        skip=0
        for x in "$@"; do [[ $p == "$x" ]] && skip=1; done
        ((skip)) || { echo "$p"; return 0; }
    done
    return 1
}

# Print (stdout) and record the seed list of all live nodes.
print_seeds() {
    local seeds
    seeds=$(live_ports | sed "s|^|redis://$SC_HOST:|" | paste -sd, -)
    echo "$seeds" >"$SC_DIR/seeds"
    echo "$seeds"
}

# cluster_cmd SUBCOMMAND ARGS...: redis-cli --cluster ..., output to stderr without colour codes
# and progress-dot lines; fails if redis-cli fails.
cluster_cmd() {
    redis-cli --cluster "$@" 2>&1 | sed -u -e 's/\x1b\[[0-9;]*m//g' -e '/^[#.]*$/d' >&2
}

require_tools() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null || die "$t not found (apt-get install -y redis-server redis-tools)"; done
}
