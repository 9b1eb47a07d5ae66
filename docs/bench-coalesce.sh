#!/usr/bin/env bash
# Compares --write-coalesce settings (docs/BENCHMARKS.md, log entry 12): for each
# run, fresh 3 instances on the cluster at 127.0.0.1:7100, then one 10 s broadcast to
# 300 clients. Usage: RATE=6024 docs/bench-coalesce.sh 0s 1ms 2ms
set -u
cd "$(dirname "$0")/.."
U=ws://127.0.0.1:8091/ws,ws://127.0.0.1:8092/ws,ws://127.0.0.1:8093/ws
RATE=${RATE:-6024}
up() {
  for i in 1 2 3; do [ -f /tmp/c$i.pid ] && kill "$(cat /tmp/c$i.pid)" 2>/dev/null; done
  sleep 0.5
  for i in 1 2 3; do
    ./target/release/shardcast --worker-threads 1 --listen 127.0.0.1:809$i --broker redis-cluster \
      --redis-nodes redis://127.0.0.1:7100 "$@" > /tmp/c$i.log 2>&1 & echo $! > /tmp/c$i.pid
  done
  sleep 1
  P=$(cat /tmp/c1.pid),$(cat /tmp/c2.pid),$(cat /tmp/c3.pid)
}
for r in 1 2 3; do
  for wc in "$@"; do
    up --write-coalesce "$wc"
    echo "== $wc run $r: $(./target/release/shardcast-bench --url $U --server-pid $P broadcast \
      --clients 300 --rate "$RATE" --duration 10 | grep -E 'latency|server CPU|correct|bench CPU' | tr -s ' ' | tr '\n' ' ')"
  done
done
for i in 1 2 3; do kill "$(cat /tmp/c$i.pid)" 2>/dev/null; done
