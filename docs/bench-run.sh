#!/usr/bin/env bash
# Benchmark runs for docs/BENCHMARKS.md (second round: the floor, before/after, auth,
# one Redis). Needs release builds (cargo build --release --workspace), a Redis
# Cluster on 127.0.0.1:7100 (cluster/start.sh --base-port 7100 --dir /tmp/sc-dev),
# redis-server for the one-Redis setup, and for the before/after columns a build of
# the commit before the architecture issue in $BEFORE (default /tmp/shardcast-before:
#   git worktree add /tmp/before 3fed8e6 && cargo build --release --manifest-path /tmp/before/Cargo.toml
#   cp /tmp/before/target/release/shardcast /tmp/shardcast-before).
# Results go to $OUT (default /tmp/bench2): one .txt and one .json per run.
# Usage: docs/bench-run.sh [section...]
#   sections: low rooms sat churn storm idle before presence (default all)
set -u
cd "$(dirname "$0")/.."
. docs/bench-lib.sh
B=./target/release/shardcast-bench
NEW=./target/release/shardcast
BEFORE=${BEFORE:-/tmp/shardcast-before}
# The build this round's last changes start from (3303b21), for their before/after:
#   git worktree add /tmp/r2 3303b21 && cargo build --release --manifest-path /tmp/r2/Cargo.toml
#   cp /tmp/r2/target/release/shardcast /tmp/shardcast-head
HEAD_BIN=${HEAD_BIN:-/tmp/shardcast-head}
out=${OUT:-/tmp/bench2}; mkdir -p "$out"
sections=${*:-low rooms sat churn storm idle before presence}
has() { [[ " $sections " == *" $1 "* ]]; }

# run NAME [tool args...]: one run of the tool against $U / $P, reported to $out/NAME.*
run() {
  local name=$1; shift
  uptime > $out/$name.load
  $B --url $U --server-pid $P --json $out/$name.json "$@" > $out/$name.txt 2>&1
}
# tok NAME [tool args...]: the same with every client holding a connection token.
tok() {
  local name=$1; shift
  uptime > $out/$name.load
  $B --url $U --server-pid $P --token-secret $SECRET --json $out/$name.json "$@" > $out/$name.txt 2>&1
}

# setup NAME: start the named setup (sets P and U).
setup() {
  case $1 in
    floor) start_floor 1 ;;
    floor2) start_floor 2 ;;
    emb) BIN=$NEW start_embedded ;;
    emb1) BIN=$NEW start_embedded --worker-threads 1 ;;
    emb1-before) BIN=$BEFORE FLAGS="" start_embedded --worker-threads 1 ;;
    emb1-head) BIN=$HEAD_BIN start_embedded --worker-threads 1 ;;
    emb-auth-head) BIN=$HEAD_BIN FLAGS="$AUTH" start_embedded ;;
    cl-head) BIN=$HEAD_BIN start_cluster ;;
    cl-auth-head) BIN=$HEAD_BIN FLAGS="$AUTH" start_cluster ;;
    emb-auth) BIN=$NEW FLAGS="$AUTH" start_embedded ;;
    emb-before) BIN=$BEFORE FLAGS="" start_embedded ;;
    cl) BIN=$NEW start_cluster ;;
    cl-auth) BIN=$NEW FLAGS="$AUTH" start_cluster ;;
    cl-before) BIN=$BEFORE FLAGS="" start_cluster ;;
    one) BIN=$NEW start_one_redis ;;
  esac
}

if has low; then
  # Broadcast C=300 at 50 msg/s: three runs of each setup, interleaved so that
  # drift in the machine's load spreads over all of them. emb1 is the embedded node
  # on one worker thread, like the floor and each cluster instance.
  for r in 1 2 3; do
    for s in floor emb1 emb1-head emb1-before emb emb-before cl cl-head cl-before one; do
      setup $s
      [[ $s == emb* || $s == floor ]] || sleep 1
      if [[ $s == *auth ]]; then tok low-$s-r$r broadcast --clients 300 --rate 50 --duration 10
      else run low-$s-r$r broadcast --clients 300 --rate 50 --duration 10; fi
    done
  done
fi

if has rooms; then
  # Small rooms: 900 clients in 300 rooms of 3 (members on different instances), 3000 msg/s.
  for s in floor emb cl cl-head cl-before one; do
    setup $s
    run rooms-$s rooms --clients 900 --rate 3000 --duration 10
  done
fi

if has sat; then
  # Capacity: rate x1.2 per 5 s step until p99 >= 100 ms or a loss, then half of it.
  for s in floor2 emb cl cl-before; do
    setup $s
    run sat-$s saturate --clients 300 --rate 1000 --duration 5 --factor 1.2
  done
  for s in floor cl cl-before; do
    setup $s
    run satrooms-$s saturate --scenario rooms --clients 900 --rate 1000 --duration 5 --factor 1.2
  done
fi

if has churn; then
  # Subscribe/unsubscribe churn on the cluster, 1000 channels, 2000 ops/s.
  for s in cl cl-before; do
    setup $s
    run churn-$s churn --clients 200 --pool 1000 --rate 2000 --duration 10 \
      --redis 127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102
  done
fi

if has storm; then
  # Connect rate: 3000 clients dropped and reconnected at once (connect + subscribe).
  for s in emb emb-before; do setup $s; run storm-$s storm --clients 3000 --channels 300; done
  setup emb-auth; tok storm-emb-auth storm --clients 3000 --channels 300
  setup cl; run storm-cl storm --clients 3000 --channels 300
  setup cl-auth; tok storm-cl-auth storm --clients 3000 --channels 300
fi

if has idle; then
  # Memory per idle connection: 19,000 on one node without and with tokens, then
  # 50,000 with tokens over 3 fresh instances on the cluster (3 tool processes).
  setup emb; run idle-emb idle --connections 19000 --hold 5 --sources 4
  setup emb-auth; tok idle-emb-auth idle --connections 19000 --hold 5 --sources 4
  setup emb-auth-head; tok idle-emb-auth-head idle --connections 19000 --hold 5 --sources 4
  # The same, each connection also subscribed to one of 100 rooms: without and with
  # presence in the `room` namespace (the cost of a subscription, then of presence).
  printf '[namespaces.room]\npresence = false\n' > /tmp/bench-rooms.toml
  printf '[namespaces.room]\npresence = true\n' > /tmp/bench-presence.toml
  BIN=$NEW start_embedded --config /tmp/bench-rooms.toml
  run idle-emb-rooms idle --connections 19000 --hold 5 --sources 4 --rooms 100
  BIN=$NEW start_embedded --config /tmp/bench-presence.toml
  run idle-emb-presence idle --connections 19000 --hold 5 --sources 4 --rooms 100
  setup cl-auth; tok idle-cl-auth idle --connections 50000 --hold 10 --sources 4 --procs 3
  setup cl-auth-head; tok idle-cl-auth-head idle --connections 50000 --hold 10 --sources 4 --procs 3
fi

if has before; then
  # The rest of the before/after pairs: idle 19,000 and churn on the embedded node.
  setup emb-before; run idle-emb-before idle --connections 19000 --hold 5 --sources 4
  for s in emb emb-before; do
    setup $s
    run churn-$s churn --clients 200 --pool 1000 --rate 2000 --duration 10
  done
fi

if has presence; then
  # Join/leave cost: churn on the cluster with presence and join/leave on in the
  # `churn` namespace, beside the same churn without (section churn), Redis CPU from
  # every node (replicas replicate the presence writes).
  printf '[namespaces.churn]\npresence = true\njoin_leave = true\n' > /tmp/bench-churn-presence.toml
  ALL=127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103,127.0.0.1:7104,127.0.0.1:7105
  BIN=$NEW start_cluster; sleep 1
  run churn-cl-nopresence churn --clients 200 --pool 1000 --rate 2000 --duration 10 --redis $ALL
  BIN=$NEW start_cluster --config /tmp/bench-churn-presence.toml; sleep 1
  run churn-cl-presence churn --clients 200 --pool 1000 --rate 2000 --duration 10 --redis $ALL
  # Redis memory per presence entry: 10,000 members in 100 channels, used_memory of
  # the three primaries before and while they are held.
  mem() { local t=0; for p in 7100 7101 7102; do
    t=$((t + $(redis-cli -p $p info memory | tr -d '\r' | awk -F: '/^used_memory:/{print $2}'))); done; echo $t; }
  BIN=$NEW start_cluster --config /tmp/bench-presence.toml; sleep 2
  m0=$(mem)
  run idle-cl-presence idle --connections 10000 --hold 20 --sources 4 --rooms 100 &
  held=$!
  conns() { local t=0; for i in 1 2 3; do
    t=$((t + $(curl -s 127.0.0.1:809$i/metrics | awk '/^shardcast_connections /{print int($2)}'))); done; echo $t; }
  for _ in $(seq 1 120); do [ "$(conns)" -ge 10000 ] && break; sleep 1; done
  sleep 5; m1=$(mem)
  wait $held
  echo "used_memory of the primaries: before $m0, with 10000 members $m1, per member $(( (m1 - m0) / 10000 )) bytes" > $out/presence-memory.txt
fi

stop_all
stop_redis
echo done > $out/DONE
