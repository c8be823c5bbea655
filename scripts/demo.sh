#!/usr/bin/env bash
# The demo behind `make demo`: a local repository under $DEMO, a backup of
# this checkout's source, the snapshot list, a restore of one file, and a
# look through the FUSE mount. Safe to run again: it starts from scratch.
set -euo pipefail
DJ=${DJ:-bin/dj}
DEMO=${DEMO:-demo}
DJ=$(realpath "$DJ")
SRC=$(pwd)

rm -rf "$DEMO"
mkdir -p "$DEMO"
DEMO=$(realpath "$DEMO")
export DJ_REPOSITORY="$DEMO/repo"
echo "demo-password" > "$DEMO/password"
export DJ_PASSWORD_FILE="$DEMO/password"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "dj init"
"$DJ" init
EXCLUDES=(--exclude "$DEMO" --exclude "$SRC/bin" --exclude "$SRC/.git" --exclude "*.test")
step "dj backup $SRC ${EXCLUDES[*]}"
"$DJ" backup "$SRC" "${EXCLUDES[@]}"
step "dj backup $SRC (again: unchanged files are not read)"
"$DJ" backup "$SRC" "${EXCLUDES[@]}"
step "dj snapshots"
"$DJ" snapshots
step "dj ls latest $SRC/cmd/dj"
"$DJ" ls latest "$SRC/cmd/dj"
step "dj restore latest:$SRC --target $DEMO/restored --include README.md"
"$DJ" restore "latest:$SRC" --target "$DEMO/restored" --include "README.md"
cmp "$SRC/README.md" "$DEMO/restored/README.md" && echo "restored README.md is identical to the source"

MNT="$DEMO/mnt"
mkdir -p "$MNT"
step "dj mount $MNT &"
"$DJ" mount "$MNT" > "$DEMO/mount.log" 2>&1 &
MPID=$!
cleanup() { fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null || true; wait "$MPID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do [ -e "$MNT/snapshots/latest" ] && break; sleep 0.1; done
step "ls $MNT/snapshots/"
ls "$MNT/snapshots/"
step "ls -l $MNT/snapshots/latest$SRC/"
ls -l "$MNT/snapshots/latest$SRC/"
step "cmp $SRC/README.md $MNT/snapshots/latest$SRC/README.md"
cmp "$SRC/README.md" "$MNT/snapshots/latest$SRC/README.md" && echo "README.md read through the mount is identical to the source"
step "fusermount3 -u $MNT"
cleanup
trap - EXIT
cat "$DEMO/mount.log"

cat <<MSG

Next, try (with DJ_REPOSITORY=$DEMO/repo DJ_PASSWORD_FILE=$DEMO/password):
  $DJ snapshots --json
  $DJ mount $MNT            # then browse $MNT/snapshots/latest in another shell
  $DJ diff <snapshot-id> latest
  $DJ check --read-data
  $DJ forget --keep-last 1 --prune
MSG
