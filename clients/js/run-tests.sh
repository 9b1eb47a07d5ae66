#!/usr/bin/env bash
# Runs the whole JS client suite against the real server binary, in order: unit, server tests,
# Redis Cluster failover, then the browser demo in headless Chromium.
# Assumes `npm ci` already ran in this directory. Fails loudly when something it needs is missing.
#   SHARDCAST_BIN          server binary (default: ../../target/debug/shardcast)
#   SHARDCAST_CLUSTER_BIN  cluster CLI   (default: ../../target/debug/shardcast-cluster)
#   CHROMIUM               browser       (default: /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
export SHARDCAST_BIN=${SHARDCAST_BIN:-$here/../../target/debug/shardcast}
export SHARDCAST_CLUSTER_BIN=${SHARDCAST_CLUSTER_BIN:-$here/../../target/debug/shardcast-cluster}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

fail() {
    echo "run-tests.sh: $*" >&2
    exit 1
}
[[ -x $SHARDCAST_BIN ]] || fail "shardcast binary not found at $SHARDCAST_BIN (cd ../.. && cargo build --bin shardcast, or set SHARDCAST_BIN)"
[[ -x $SHARDCAST_CLUSTER_BIN ]] || fail "shardcast-cluster not found at $SHARDCAST_CLUSTER_BIN (cd ../.. && cargo build -p shardcast-testkit --no-default-features --bin shardcast-cluster)"
[[ -x $CHROMIUM ]] || fail "chromium not found at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)"
command -v redis-server >/dev/null || fail "redis-server not found (apt-get install -y redis-server)"
command -v redis-cli >/dev/null || fail "redis-cli not found (apt-get install -y redis-tools)"
[[ -d node_modules/ws && -d node_modules/puppeteer-core && -d node_modules/typescript ]] || fail "node_modules missing: run npm ci first"

npm run --silent build
npm run --silent size

# One file at a time, in this order; every file runs even if an earlier one failed.
files=(
    test/unit.test.mjs
    test/reconnect.test.mjs
    test/recovery.test.mjs
    test/tokens.test.mjs
    test/requests.test.mjs
    test/cluster.test.mjs
    test/browser/chat.test.mjs
)
tap=$(mktemp -d)
trap 'rm -rf "$tap"' EXIT
passed=0 failed=0 broken=()
for f in "${files[@]}"; do
    echo "== $f"
    out=$tap/$(basename "$f").tap
    if ! node --test --test-timeout=150000 \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$out" "$f"; then
        broken+=("$f")
    fi
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1)
    n=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
    c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$out" | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${n:-0} + ${c:-0}))
done
if ((${#broken[@]})); then
    echo "run-tests.sh: failed: ${broken[*]}" >&2
    ((failed > 0)) || failed=${#broken[@]}
fi
echo "$passed passed, $failed failed"
((${#broken[@]} == 0))
