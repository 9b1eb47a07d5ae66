#!/usr/bin/env bash
# Benchmark runs for docs/BENCHMARKS.md. Needs release builds (cargo build --release)
# and a Redis Cluster on 127.0.0.1:7100 (cluster/start.sh --base-port 7100 --dir /tmp/sc-dev).
# Results go to $OUT (default /tmp/bench): one .txt and one .json per run.
set -u
cd "$(dirname "$0")/.."
. docs/bench-lib.sh
B=./target/release/shardcast-bench
out=${OUT:-/tmp/bench}; mkdir -p "$out"

# suite NAME: broadcast (3 runs each), saturate, rooms and storm against $U / $P.
suite() {
  for c in 300 900; do for r in 1 2 3; do
    uptime > $out/$1-b$c-r$r.load
    $B --url $U --server-pid $P --json $out/$1-b$c-r$r.json broadcast --clients $c --rate 50 --duration 10 > $out/$1-b$c-r$r.txt
  done; done
  for c in 300 900; do
    $B --url $U --server-pid $P --json $out/$1-sat$c.json saturate --clients $c --rate 1000 --duration 5 --factor 1.2 > $out/$1-sat$c.txt
  done
  $B --url $U --server-pid $P --json $out/$1-rooms.json rooms --clients 900 --rate 3000 --duration 10 > $out/$1-rooms.txt
  $B --url $U --server-pid $P --json $out/$1-storm.json storm --clients 3000 --channels 300 > $out/$1-storm.txt
}

stop_all
# Embedded single node
start_embedded
suite emb
stop_all; start_embedded
$B --url $U --server-pid $P --json $out/emb-idle.json idle --connections 19000 --hold 5 --sources 4 > $out/emb-idle.txt
stop_all
# 3 instances on the 3-primary cluster (127.0.0.1:7100-7105, 1 replica each)
start_cluster
suite cl
# 50,000 idle clients: fresh instances, 16,667 each, held by 3 tool processes (one
# process may hold only RLIMIT_NOFILE sockets, 20,000 here).
start_cluster
$B --url $U --server-pid $P --json $out/cl-idle.json idle --connections 50000 --hold 10 --sources 4 --procs 3 > $out/cl-idle.txt
stop_all
echo done > $out/DONE
