#!/usr/bin/env bash
# run.sh: dj's end-to-end benchmarks against restic (`make bench`).
# Builds the harness (a Go program behind the `bench` build tag) and the
# FUSE ceilings, then runs the sections. Settings are environment
# variables; integration/bench/README.md lists them and explains every
# figure. Needs root (drop_caches, FUSE mounts), restic, fio and GNU time.
set -euo pipefail

cd "$(dirname "$0")/../.."
export BENCH_DIR="${BENCH_DIR:-/var/tmp/dj-bench}"
GO="${GO:-go}"

if [ "$(id -u)" != 0 ]; then
	echo "run.sh: run as root: the benchmarks drop the page cache and mount FUSE file systems" >&2
	exit 2
fi
mkdir -p "$BENCH_DIR/bin"

# Never leave a mount behind, whatever happens to the harness.
cleanup() {
	local status=$? mp
	for mp in $(awk -v p="$BENCH_DIR/mnt/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo 2>/dev/null || true); do
		fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
	done
	exit "$status"
}
trap cleanup EXIT

# The harness, and go-fuse's loopback without passthrough (the ceiling for a
# daemon that serves the data itself), from this checkout.
"$GO" build -tags bench -o "$BENCH_DIR/bin/djbench" ./integration/bench
"$GO" build -tags bench -o "$BENCH_DIR/bin/loopback-nopt" ./integration/bench/loopback-nopt
# go-fuse's stock loopback example (uses FUSE passthrough as root on kernels
# that have it).
if [ ! -x "$BENCH_DIR/bin/loopback" ]; then
	GOBIN="$BENCH_DIR/bin" "$GO" install github.com/hanwen/go-fuse/v2/example/loopback@v2.12.1
fi

"$BENCH_DIR/bin/djbench" "$@"
