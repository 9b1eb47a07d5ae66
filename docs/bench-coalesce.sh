#!/usr/bin/env bash
# Compares --write-coalesce settings (docs/BENCHMARKS.md, log entry 12): for each
# run, fresh 3 instances on the cluster at 127.0.0.1:7100, then one 10 s broadcast to
# 300 clients. Usage: RATE=6024 docs/bench-coalesce.sh 0s 1ms 2ms
set -u
cd "$(dirname "$0")/.."
. docs/bench-lib.sh
RATE=${RATE:-6024}
for r in 1 2 3; do
  for wc in "$@"; do
    start_cluster --write-coalesce "$wc"
    echo "== $wc run $r: $(./target/release/shardcast-bench --url $U --server-pid $P broadcast \
      --clients 300 --rate "$RATE" --duration 10 | grep -E 'latency|server CPU|correct|bench CPU' | tr -s ' ' | tr '\n' ' ')"
  done
done
stop_all
