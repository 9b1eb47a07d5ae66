# Shared by the benchmark scripts in docs/: starting and stopping release instances.
# Sets P (comma-separated PIDs, for --server-pid) and U (their WebSocket URLs).
#
# BIN is the server binary (default ./target/release/shardcast; the before/after
# comparisons set it to an older build). DEV holds the flags that open the current
# server to the tool's anonymous `?user=` clients: since the auth issue a server
# refuses unauthenticated clients unless started --insecure, client publishing is
# off by default, and publishes/subscribes are rate limited per connection. Builds
# older than that take no such flags: set DEV="" for them.
BIN=${BIN:-./target/release/shardcast}
DEV=${DEV---insecure --client-publish authenticated --publish-rate 0 --subscribe-rate 0}
# With tokens instead (the tool's --token-secret): every client is verified at connect.
SECRET=bench-secret-0123456789abcdef0123456789
AUTH="--token-hmac-secret $SECRET --token-in-query --client-publish authenticated --publish-rate 0 --subscribe-rate 0"

# start_embedded [flags]: one node with the embedded broker on 127.0.0.1:8090.
start_embedded() {
  stop_all
  $BIN --listen 127.0.0.1:8090 ${FLAGS-$DEV} "$@" > /tmp/srv.log 2>&1 & echo $! > /tmp/srv.pid
  sleep 0.5
  P=$(cat /tmp/srv.pid); U=ws://127.0.0.1:8090/ws
}

# start_three [flags]: 3 instances, 1 worker thread each, on 127.0.0.1:8091-8093.
start_three() {
  stop_all
  for i in 1 2 3; do
    $BIN --worker-threads 1 --listen 127.0.0.1:809$i "$@" > /tmp/c$i.log 2>&1 & echo $! > /tmp/c$i.pid
  done
  sleep 1
  P=$(cat /tmp/c1.pid),$(cat /tmp/c2.pid),$(cat /tmp/c3.pid)
  U=ws://127.0.0.1:8091/ws,ws://127.0.0.1:8092/ws,ws://127.0.0.1:8093/ws
}

# start_cluster [flags]: start_three on the cluster at 127.0.0.1:7100.
start_cluster() {
  start_three --broker redis-cluster --redis-nodes redis://127.0.0.1:7100 ${FLAGS-$DEV} "$@"
}

# start_one_redis [flags]: start_three on one redis-server at 127.0.0.1:7200
# (started here if it is not running; stopped by stop_redis).
start_one_redis() {
  stop_all
  if ! redis-cli -p 7200 ping > /dev/null 2>&1; then
    redis-server --port 7200 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --pidfile /tmp/bench-redis.pid --logfile /tmp/bench-redis.log
    sleep 0.5
  fi
  start_three --broker redis --redis-url redis://127.0.0.1:7200/0 ${FLAGS-$DEV} "$@"
}

# start_floor [threads]: the bench tool's reference server on 127.0.0.1:8095.
start_floor() {
  stop_all
  ./target/release/shardcast-bench floor --listen 127.0.0.1:8095 --worker-threads ${1:-1} \
    > /tmp/floor.log 2>&1 & echo $! > /tmp/floor.pid
  sleep 0.5
  P=$(cat /tmp/floor.pid); U=ws://127.0.0.1:8095/ws
}

# stop_all: the servers these functions started, by their PIDs.
stop_all() {
  for f in /tmp/c1.pid /tmp/c2.pid /tmp/c3.pid /tmp/srv.pid /tmp/floor.pid; do
    [ -f $f ] && kill "$(cat $f)" 2>/dev/null
    rm -f $f
  done
  sleep 0.5
}

# stop_redis: the one redis-server start_one_redis started.
stop_redis() {
  [ -f /tmp/bench-redis.pid ] && kill "$(cat /tmp/bench-redis.pid)" 2>/dev/null
  rm -f /tmp/bench-redis.pid
}
