#!/usr/bin/env bash
# Make sure a Docker engine is running (machines here have no systemd).
# If `docker info` works: exit 0. Otherwise start `dockerd --ip 127.0.0.1` in the background
# (published ports bind to loopback only), log to /var/log/dockerd-shardcast.log, PID in
# /var/run/dockerd-shardcast.pid, and wait up to 60 s for `docker info`.
#
# Usage: cluster/dockerd.sh          start if needed
#        cluster/dockerd.sh --stop   stop the dockerd this script started (by its PID file)
# Needs: apt-get install -y docker.io (docker-compose for compose-up.sh).
#
# Findings on this Debian bookworm VM (docker.io 20.10.24, kernel 6.x, cgroup v1, root):
#  - plain `dockerd --ip 127.0.0.1` works and is up in ~1 s: storage driver overlay2, iptables
#    (nf_tables backend) and the bridge network work; dockerd starts its own containerd.
#    No --storage-driver / --iptables flags are needed here.
#  - As a fallback for hosts where overlay2 or iptables are unavailable (nested containers,
#    missing kernel modules), a failed first start is retried with --storage-driver vfs, then
#    additionally with --iptables=false (port publishing then relies on docker-proxy).
#    The flags that worked are written to /var/run/dockerd-shardcast.flags.
#  - The docker CLI in /usr/local/bin (28.x) talks to this 20.10 daemon fine (API negotiation).
set -euo pipefail

LOG=/var/log/dockerd-shardcast.log
PIDFILE=/var/run/dockerd-shardcast.pid
FLAGSFILE=/var/run/dockerd-shardcast.flags
TIMEOUT=60

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_alive() { [[ -s $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && grep -q dockerd "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; }

if [[ ${1:-} == --stop ]]; then
    if pid_alive; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        log "stopped dockerd (pid $pid)"
    else
        log "no dockerd started by this script is running"
    fi
    exit 0
fi
[[ -z ${1:-} ]] || die "unknown argument: $1"

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

if docker_ok; then
    exit 0
fi
command -v dockerd >/dev/null || die "dockerd not found (apt-get install -y docker.io)"

# A dockerd we started earlier may still be coming up.
if pid_alive; then
    log "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
    for _ in $(seq $((TIMEOUT * 2))); do docker_ok && exit 0; sleep 0.5; done
    die "dockerd (pid $(cat "$PIDFILE")) does not answer; see $LOG"
fi

try_start() {
    local start pid
    rm -f "$PIDFILE"
    log "starting dockerd $*"
    start=$(date +%s%N)
    # setsid: own session, so it survives the calling shell and its job control.
    setsid dockerd "$@" >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    for _ in $(seq $((TIMEOUT * 5))); do
        if docker_ok; then
            echo "$*" >"$FLAGSFILE"
            log "dockerd up (pid $pid) after $((($(date +%s%N) - start) / 1000000)) ms; log $LOG"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "dockerd exited: $(tail -3 "$LOG" | tr '\n' ' ')"; return 1; }
        sleep 0.2
    done
    log "dockerd did not answer within ${TIMEOUT}s; stopping it"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    return 1
}

base=(--ip 127.0.0.1 --pidfile "$PIDFILE.dockerd")
try_start "${base[@]}" ||
    try_start "${base[@]}" --storage-driver vfs ||
    try_start "${base[@]}" --storage-driver vfs --iptables=false ||
    die "could not start dockerd; see $LOG"
