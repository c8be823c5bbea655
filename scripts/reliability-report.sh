#!/usr/bin/env bash
# Writes integration/bench/RELIABILITY.md from the tables the battery
# recorded in DIR (make stress sets DJ_RELIABILITY_DIR to it): one section
# per table file, in name order, under a header naming the commit and date.
set -euo pipefail
dir=${1:?usage: reliability-report.sh DIR [OUT]}
out=${2:-integration/bench/RELIABILITY.md}
# FORM says which length of the battery recorded the tables.
form=${FORM:-"the full battery, \`make stress\` (DJ_STRESS=1)"}
# The hand-written account of longer runs, from its heading (which starts
# with kept_from) to the end of the old file, is kept below the new tables.
kept_from="## Longer runs made while the battery was written"
kept=""
if [ -f "$out" ] && grep -q "^$kept_from" "$out"; then
  kept=$(sed -n "/^$kept_from/,\$p" "$out")
fi
{
  echo "# dj reliability battery"
  echo
  echo "Counts recorded by $form on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), on $(nproc) cores."
  echo "Each table is written by the test named in its section; \`make test\` runs the same tests in their short form."
  for f in "$dir"/*.md; do
    [ -e "$f" ] || continue
    echo
    echo "## $(basename "$f" .md)"
    echo
    cat "$f"
  done
  if [ -n "$kept" ]; then
    echo
    printf '%s\n' "$kept"
  fi
} > "$out.new"
mv "$out.new" "$out"
echo "wrote $out"
