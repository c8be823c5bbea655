#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME (default 10m) each,
# one after another, and records the executions of each in
# DJ_RELIABILITY_DIR/fuzzing.md when that is set. A crash stops the script
# with the failing input left in the package's testdata/fuzz directory:
# commit it as a regression seed with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10m}
rec=${DJ_RELIABILITY_DIR:-}
if [ -n "$rec" ]; then
  mkdir -p "$rec"
  [ -e "$rec/fuzzing.md" ] || printf '| package | target | time | executions | result |\n| --- | --- | --- | --- | --- |\n' > "$rec/fuzzing.md"
fi
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  pkg=./$(dirname "${file#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "== $pkg $target ($fuzztime)"
    log=$(mktemp)
    status=ok
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"; then
      status=FAILED
    fi
    execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    rm -f "$log"
    if [ -n "$rec" ]; then
      printf '| %s | %s | %s | %s | %s |\n' "$pkg" "$target" "$fuzztime" "${execs:-?}" "$status" >> "$rec/fuzzing.md"
    fi
    [ "$status" = ok ] || exit 1
  done
done
