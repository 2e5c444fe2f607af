#!/usr/bin/env bash
# difflog report over a run with 10,000 recorded images (target ≤ 2 s).
#   benches/report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin difflog >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/difflog-reportbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
target/release/difflog bench record --calls 2500 --images-per-call 4 --size 16 --root "$work/runs" --no-baseline >/dev/null
run=$(ls -d "$work"/runs/2*)
best=999
for _ in 1 2 3; do
  rm -rf "$work/report"
  t0=$(date +%s.%N); target/release/difflog report "$run" -o "$work/report" >/dev/null; t1=$(date +%s.%N)
  best=$(echo "t=$t1 - $t0; if (t < $best) t else $best" | bc -l)
done
rows=$(grep -o '<tr class="row">' "$work/report/index.html" | wc -l)
printf '| figure | measured | target |\n|---|---|---|\n'
printf '| difflog report, run with %s images, s (best of 3) | %.3f | ≤ 2 |\n' "$rows" "$best"
printf '| report size, bytes | %s | |\n' "$(stat -c %s "$work/report/index.html")"
