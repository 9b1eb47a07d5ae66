# Shared by the benchmark scripts in docs/: starting and stopping release instances.
# Sets P (comma-separated PIDs, for --server-pid) and U (their WebSocket URLs).

# start_embedded: one node with the embedded broker on 127.0.0.1:8090.
start_embedded() {
  ./target/release/shardcast --listen 127.0.0.1:8090 "$@" > /tmp/srv.log 2>&1 & echo $! > /tmp/srv.pid
  sleep 0.5
  P=$(cat /tmp/srv.pid); U=ws://127.0.0.1:8090/ws
}

# start_cluster [flags]: 3 instances, 1 worker thread each, on the cluster at 127.0.0.1:7100.
start_cluster() {
  stop_all
  for i in 1 2 3; do
    ./target/release/shardcast --worker-threads 1 --listen 127.0.0.1:809$i --broker redis-cluster \
      --redis-nodes redis://127.0.0.1:7100 "$@" > /tmp/c$i.log 2>&1 & echo $! > /tmp/c$i.pid
  done
  sleep 1
  P=$(cat /tmp/c1.pid),$(cat /tmp/c2.pid),$(cat /tmp/c3.pid)
  U=ws://127.0.0.1:8091/ws,ws://127.0.0.1:8092/ws,ws://127.0.0.1:8093/ws
}

# stop_all: the instances these functions started, by their PIDs.
stop_all() {
  for f in /tmp/c1.pid /tmp/c2.pid /tmp/c3.pid /tmp/srv.pid; do
    [ -f $f ] && kill "$(cat $f)" 2>/dev/null
    rm -f $f
  done
  sleep 0.5
}
