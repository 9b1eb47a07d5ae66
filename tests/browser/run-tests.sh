#!/usr/bin/env bash
# Browser test of the operator's dashboard: headless Chromium against three shardcast
# instances on a local Redis Cluster (started and stopped here). Fails loudly, with the
# reason, when something it needs is missing.
#
# Usage: tests/browser/run-tests.sh
# Env:   SHARDCAST_BIN          (default target/debug/shardcast; the page is embedded at
#                                compile time, so rebuild after editing src/http/dashboard/)
#        SHARDCAST_CLUSTER_BIN  (default target/debug/shardcast-cluster; built when missing)
#        CHROMIUM_BIN           (default /usr/bin/chromium)
#        SHARDCAST_ALLOW_STALE=1  run even if the binary is older than the dashboard files
#        SHARDCAST_TEST_KEEP=1    keep the temp dir (instance logs) after the run
# Writes docs/img/dashboard.png and docs/img/dashboard-instance-killed.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "tests/browser/run-tests.sh: FAIL: $*" >&2; exit 1; }

command -v node >/dev/null || die "node not found (Node 20 or newer is needed)"
major=$(node -p 'process.versions.node.split(".")[0]')
(( major >= 20 )) || die "node $(node --version) is too old (Node 20 or newer is needed)"

export SHARDCAST_BIN=${SHARDCAST_BIN:-$repo/target/debug/shardcast}
[[ -x $SHARDCAST_BIN ]] || die "shardcast binary not found at $SHARDCAST_BIN: build it with (cd $repo && cargo build --bin shardcast), or set SHARDCAST_BIN"
if [[ ${SHARDCAST_ALLOW_STALE:-} != 1 ]]; then
    for f in "$repo"/src/http/dashboard/*; do
        [[ $f -nt $SHARDCAST_BIN ]] && die "$SHARDCAST_BIN is older than ${f#"$repo"/} (the page is embedded at compile time): rebuild with (cd $repo && cargo build --bin shardcast), or set SHARDCAST_ALLOW_STALE=1"
    done
fi

export CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
[[ -x $CHROMIUM_BIN ]] || die "chromium not found at $CHROMIUM_BIN (apt-get install chromium, or set CHROMIUM_BIN)"
command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"

export SHARDCAST_CLUSTER_BIN=${SHARDCAST_CLUSTER_BIN:-$repo/target/debug/shardcast-cluster}
if [[ ! -x $SHARDCAST_CLUSTER_BIN ]]; then
    echo "building the cluster CLI ($SHARDCAST_CLUSTER_BIN is missing)" >&2
    (cd "$repo" && cargo build -p shardcast-testkit --no-default-features --bin shardcast-cluster) ||
        die "could not build the cluster CLI"
    [[ -x $SHARDCAST_CLUSTER_BIN ]] || die "the cluster CLI is still missing at $SHARDCAST_CLUSTER_BIN"
fi

if [[ ! -d $here/node_modules/puppeteer-core || ! -d $here/node_modules/ws ]]; then
    (cd "$here" && npm ci --no-audit --no-fund) || die "npm ci failed in tests/browser"
fi

cd "$here"
exec node --test --test-reporter=spec --test-timeout=180000 dashboard.test.mjs
