#!/usr/bin/env bash
# Benchmark runs for docs/BENCHMARKS.md. Needs release builds (cargo build --release)
# and a Redis Cluster on 127.0.0.1:7100 (cluster/start.sh --base-port 7100 --dir /tmp/sc-dev).
# Results go to $OUT (default /tmp/bench): one .txt and one .json per run.
set -u
cd "$(dirname "$0")/.."
B=./target/release/shardcast-bench
out=${OUT:-/tmp/bench}; mkdir -p "$out"
for i in 1 2 3; do kill $(cat /tmp/c$i.pid) 2>/dev/null; done
kill $(cat /tmp/srv.pid) 2>/dev/null
sleep 0.5
# Embedded single node
./target/release/shardcast --listen 127.0.0.1:8090 > /tmp/srv.log 2>&1 & echo $! > /tmp/srv.pid
sleep 0.5
P=$(cat /tmp/srv.pid); U=ws://127.0.0.1:8090/ws
for c in 300 900; do for r in 1 2 3; do
  uptime > $out/emb-b$c-r$r.load
  $B --url $U --server-pid $P --json $out/emb-b$c-r$r.json broadcast --clients $c --rate 50 --duration 10 > $out/emb-b$c-r$r.txt
done; done
for c in 300 900; do
  $B --url $U --server-pid $P --json $out/emb-sat$c.json saturate --clients $c --rate 1000 --duration 5 --factor 1.2 > $out/emb-sat$c.txt
done
$B --url $U --server-pid $P --json $out/emb-rooms.json rooms --clients 900 --rate 3000 --duration 10 > $out/emb-rooms.txt
$B --url $U --server-pid $P --json $out/emb-storm.json storm --clients 3000 --channels 300 > $out/emb-storm.txt
kill $P; sleep 0.5
./target/release/shardcast --listen 127.0.0.1:8090 > /tmp/srv.log 2>&1 & echo $! > /tmp/srv.pid
sleep 0.5
$B --url $U --server-pid $(cat /tmp/srv.pid) --json $out/emb-idle.json idle --connections 19000 --hold 5 --sources 4 > $out/emb-idle.txt
kill $(cat /tmp/srv.pid); sleep 0.5
# 3 instances on the 3-primary cluster (127.0.0.1:7100-7105, 1 replica each)
for i in 1 2 3; do ./target/release/shardcast --worker-threads 1 --listen 127.0.0.1:809$i --broker redis-cluster --redis-nodes redis://127.0.0.1:7100 > /tmp/c$i.log 2>&1 & echo $! > /tmp/c$i.pid; done
sleep 1
P=$(cat /tmp/c1.pid),$(cat /tmp/c2.pid),$(cat /tmp/c3.pid); U=ws://127.0.0.1:8091/ws,ws://127.0.0.1:8092/ws,ws://127.0.0.1:8093/ws
for c in 300 900; do for r in 1 2 3; do
  uptime > $out/cl-b$c-r$r.load
  $B --url $U --server-pid $P --json $out/cl-b$c-r$r.json broadcast --clients $c --rate 50 --duration 10 > $out/cl-b$c-r$r.txt
done; done
for c in 300 900; do
  $B --url $U --server-pid $P --json $out/cl-sat$c.json saturate --clients $c --rate 1000 --duration 5 --factor 1.2 > $out/cl-sat$c.txt
done
$B --url $U --server-pid $P --json $out/cl-rooms.json rooms --clients 900 --rate 3000 --duration 10 > $out/cl-rooms.txt
$B --url $U --server-pid $P --json $out/cl-storm.json storm --clients 3000 --channels 300 > $out/cl-storm.txt
# 50,000 idle clients: fresh instances, 16,667 each, held by 3 tool processes (one
# process may hold only RLIMIT_NOFILE sockets, 20,000 here).
for i in 1 2 3; do kill $(cat /tmp/c$i.pid); done; sleep 1
for i in 1 2 3; do ./target/release/shardcast --worker-threads 1 --listen 127.0.0.1:809$i --broker redis-cluster --redis-nodes redis://127.0.0.1:7100 > /tmp/c$i.log 2>&1 & echo $! > /tmp/c$i.pid; done
sleep 1
P=$(cat /tmp/c1.pid),$(cat /tmp/c2.pid),$(cat /tmp/c3.pid)
$B --url $U --server-pid $P --json $out/cl-idle.json idle --connections 50000 --hold 10 --sources 4 --procs 3 > $out/cl-idle.txt
echo done > $out/DONE
