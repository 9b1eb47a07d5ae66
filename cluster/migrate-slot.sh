#!/usr/bin/env bash
# Move one slot (and its keys) of the local Redis Cluster to another primary, then wait until
# every node agrees.
#
# Usage: cluster/migrate-slot.sh [--dir D] --slot S --to PORT
source "$(dirname "$0")/cluster-cli.sh"
case ${1:-} in -h | --help) sed -n '2,5p' "$0"; exit 0 ;; esac
sc_cluster migrate-slot "$@"
