#!/usr/bin/env bash
# Build the Docker images offline (no container registry is reachable here).
#
# Usage: cluster/images.sh [base] [--rebuild]
#          Base image shardcast/redis-nginx:bookworm = debootstrap'ed Debian bookworm (minbase) with
#          redis-server, redis-tools, nginx-light, ca-certificates; also tagged redis:7.0 and
#          nginx:1.25 so testcontainers / docker-compose find these public names locally and never
#          pull. Loaded from the zstd cache in $SHARDCAST_IMAGE_CACHE (default
#          /var/cache/shardcast-images) when present; --rebuild forces a fresh debootstrap.
#        cluster/images.sh shardcast [BINARY] [--tag TAG] [--name NAME]
#          FROM-scratch image TAG (default shardcast/shardcast:local) holding BINARY (default
#          target/release/shardcast) as /usr/local/bin/NAME (default shardcast), and, when it
#          exists, the testkit's shardcast-cluster CLI (SHARDCAST_CLUSTER_BIN, default next to
#          BINARY) for the compose stack's cluster-init job; their ldd libraries, the ELF loader,
#          /etc/nsswitch.conf ("hosts: files dns"), CA certificates, a minimal /etc/passwd;
#          ENTRYPOINT ["/usr/local/bin/NAME"].
#        cluster/images.sh all [BINARY]    both of the above.
# Idempotent: an existing image with the current recipe label is kept as is.
#
# Notes: the redis:7.0 tag is NOT the official image. Its entrypoint
# (/usr/local/bin/docker-entrypoint.sh) mimics the official one where it matters: a command
# starting with "-" or "*.conf" runs redis-server, and redis-server gets --protected-mode no unless
# the command sets it (the official image is built with protected mode off; Debian's is on, which
# refuses connections arriving through docker-proxy/bridge). Any other command (nginx, redis-cli,
# bash) is run as is. Workdir is /data as in the official image. Needs: debootstrap, zstd, docker.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${SHARDCAST_IMAGE_CACHE:-/var/cache/shardcast-images}
BASE_IMAGE=shardcast/redis-nginx:bookworm
BASE_ALIASES=(redis:7.0 nginx:1.25)
# Bump when the base image recipe below changes: stale cached/loaded images are then rebuilt.
BASE_RECIPE=bookworm-v1
BASE_PACKAGES=redis-server,redis-tools,nginx-light,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

recipe_of() { docker image inspect --format '{{ index .Config.Labels "org.shardcast.recipe" }}' "$1" 2>/dev/null || true; }

build_base() {
    local rebuild=$1 cache_file="$CACHE/redis-nginx-$BASE_RECIPE.tar.zst" t0 work
    t0=$(date +%s%N)
    "$HERE/dockerd.sh"
    if [[ $rebuild == 0 && $(recipe_of "$BASE_IMAGE") == "$BASE_RECIPE" ]]; then
        log "$BASE_IMAGE ($BASE_RECIPE) already present"
    elif [[ $rebuild == 0 && -s $cache_file ]]; then
        log "loading $BASE_IMAGE from $cache_file"
        zstd -dc "$cache_file" | docker load >&2
        log "loaded in $(ms_since "$t0") ms"
    else
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install -y debootstrap)"
        command -v zstd >/dev/null || die "zstd not found (apt-get install -y zstd)"
        mkdir -p "$CACHE"
        work=$(mktemp -d "$CACHE/build.XXXXXX")
        # shellcheck disable=SC2064
        trap "rm -rf '$work'" EXIT
        log "debootstrap bookworm ($BASE_PACKAGES) into $work/rootfs (~30-60 s)"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$work/rootfs" "$MIRROR" \
            >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
        customize_rootfs "$work/rootfs"
        log "importing into docker"
        tar --numeric-owner -C "$work/rootfs" -c . | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'WORKDIR /data' \
            --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
            --change 'CMD ["redis-server"]' \
            --change "LABEL org.shardcast.recipe=$BASE_RECIPE" \
            - "$BASE_IMAGE" >/dev/null
        log "caching to $cache_file"
        docker save "$BASE_IMAGE" | zstd -q -T0 -3 -f -o "$cache_file.tmp"
        mv -f "$cache_file.tmp" "$cache_file"
        rm -rf "$work"
        trap - EXIT
        log "built $BASE_IMAGE in $(ms_since "$t0") ms"
    fi
    local a
    for a in "${BASE_ALIASES[@]}"; do docker tag "$BASE_IMAGE" "$a"; done
    docker run --rm "$BASE_IMAGE" sh -c 'command -v redis-server redis-cli nginx >/dev/null' ||
        die "$BASE_IMAGE lacks redis-server/redis-cli/nginx on PATH"
    log "$BASE_IMAGE ready, also tagged ${BASE_ALIASES[*]}"
}

customize_rootfs() {
    local r=$1
    # Slim down: apt lists/caches, docs, man pages, locales.
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
        "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
        "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/var/cache/debconf/*-old
    mkdir -p "$r/data"
    # Container runtimes provide these; do not bake the build host's.
    : >"$r/etc/hostname"
    rm -f "$r/etc/resolv.conf"
    grep -q '^hosts:' "$r/etc/nsswitch.conf" || echo 'hosts: files dns' >>"$r/etc/nsswitch.conf"
    cat >"$r/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# shardcast offline stand-in for the official redis image entrypoint (see cluster/images.sh).
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ] || [ "$1" = /usr/bin/redis-server ]; then
    for a in "$@"; do
        case "$a" in --protected-mode) exec "$@" ;; esac
        case "$a" in *.conf) if grep -qs '^[[:space:]]*protected-mode' "$a"; then exec "$@"; fi ;; esac
    done
    exec "$@" --protected-mode no
fi
exec "$@"
EOF
    chmod 755 "$r/usr/local/bin/docker-entrypoint.sh"
}

build_shardcast() {
    local bin=$1 tag=$2 name=$3 t0 work lib
    t0=$(date +%s%N)
    [[ -f $bin && -x $bin ]] || die "binary $bin not found or not executable (cargo build --release first)"
    bin=$(readlink -f "$bin")
    "$HERE/dockerd.sh"
    local cli=${SHARDCAST_CLUSTER_BIN:-$(dirname "$bin")/shardcast-cluster} extra=()
    if [[ -x $cli ]]; then extra=("$(readlink -f "$cli")"); fi
    local sum old
    sum="$(cat "$bin" "${extra[@]}" | sha256sum | cut -c1-64)/$name"
    old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    if [[ -n $old && $(docker image inspect --format '{{ index .Config.Labels "org.shardcast.binary" }}' "$tag") == "$sum" ]]; then
        log "$tag is up to date with $bin"
        return 0
    fi
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
    chmod 1777 "$work/rootfs/tmp"
    cp "$bin" "$work/rootfs/usr/local/bin/$name"
    if ((${#extra[@]})); then cp "${extra[0]}" "$work/rootfs/usr/local/bin/shardcast-cluster"; fi
    # Every absolute path ldd prints (libraries and the ELF interpreter), dereferenced, at the same
    # path. glibc >= 2.34 has the files/dns NSS modules built in, so nothing is dlopen'ed for DNS.
    local b
    for b in "$bin" "${extra[@]}"; do
        if ldd "$b" >/dev/null 2>&1; then
            for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
                mkdir -p "$work/rootfs$(dirname "$lib")"
                cp -L "$lib" "$work/rootfs$lib"
            done
        else
            log "$b is statically linked"
        fi
    done
    echo 'hosts: files dns' >"$work/rootfs/etc/nsswitch.conf"
    printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$work/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/rootfs/etc/group"
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        mkdir -p "$work/rootfs/etc/ssl/certs"
        cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"
    fi
    tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -c . | docker import \
        --change "ENTRYPOINT [\"/usr/local/bin/$name\"]" \
        --change 'EXPOSE 8080' \
        --change "LABEL org.shardcast.binary=$sum" \
        - "$tag" >/dev/null
    rm -rf "$work"
    trap - EXIT
    # Drop the previous build if nothing else uses it any more (fails harmlessly otherwise).
    if [[ -n $old && $old != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    log "built $tag from $bin ($(du -sh "$bin" | cut -f1) binary) in $(ms_since "$t0") ms"
}

# The default local build also answers to the public name docker-compose.cluster.yml
# defaults to, so that a plain `docker-compose -f docker-compose.cluster.yml up` finds it
# locally and never pulls.
PUBLIC_SHARDCAST=ghcr.io/shardcast/shardcast:latest
tag_public() {
    if [[ $1 == shardcast/shardcast:local ]]; then
        docker tag "$1" "$PUBLIC_SHARDCAST"
        log "tagged $1 as $PUBLIC_SHARDCAST"
    fi
}

what=${1:-base}
[[ $# -gt 0 ]] && shift
case $what in
base | --rebuild)
    rebuild=0
    [[ $what == --rebuild || ${1:-} == --rebuild ]] && rebuild=1
    build_base "$rebuild"
    ;;
shardcast)
    bin="$REPO/target/release/shardcast" tag=shardcast/shardcast:local name=shardcast
    while (($#)); do
        case $1 in
        --tag) tag=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        *) bin=$1; shift ;;
        esac
    done
    build_shardcast "$bin" "$tag" "$name"
    tag_public "$tag"
    ;;
all)
    build_base 0
    build_shardcast "${1:-$REPO/target/release/shardcast}" shardcast/shardcast:local shardcast
    tag_public shardcast/shardcast:local
    ;;
-h | --help) sed -n '2,25p' "$0" ;;
*) die "unknown command: $what (base | shardcast [BINARY] [--tag TAG] [--name NAME] | all [BINARY])" ;;
esac
