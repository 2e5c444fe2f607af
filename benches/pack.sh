#!/usr/bin/env bash
# difflog pack versus `tar | zstd -3` over the same run (200 × 512² PNGs),
# measured in the same run; prints both times and the throughput ratio.
#   benches/pack.sh   (needs the zstd command: apt-get install zstd)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v zstd >/dev/null || { echo "benches/pack.sh needs the zstd command (apt-get install zstd)" >&2; exit 1; }
cargo build --release --locked --bin difflog >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/difflog-packbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
target/release/difflog bench record --calls 200 --size 512 --root "$work/runs" --no-baseline >/dev/null
now() { date +%s.%N; }
best_pack=999; best_tar=999
for _ in 1 2 3; do
  rm -f "$work/a.tar.zst" "$work/b.tar.zst"
  t0=$(now); target/release/difflog pack "$work/runs" -o "$work/a.tar.zst" >/dev/null; t1=$(now)
  tar -cf - -C "$work" runs | zstd -3 -q -o "$work/b.tar.zst"; t2=$(now)
  p=$(echo "$t1 - $t0" | bc -l); t=$(echo "$t2 - $t1" | bc -l)
  best_pack=$(echo "if ($p < $best_pack) $p else $best_pack" | bc -l)
  best_tar=$(echo "if ($t < $best_tar) $t else $best_tar" | bc -l)
done
printf '| figure | measured | target |\n|---|---|---|\n'
printf '| difflog pack (verifies every digest), s | %.3f | |\n' "$best_pack"
printf '| tar \\| zstd -3, s | %.3f | |\n' "$best_tar"
printf '| pack throughput / tar\\|zstd throughput | %.3f | ≥ 0.8 |\n' "$(echo "$best_tar / $best_pack" | bc -l)"
printf '| archive bytes: pack / tar\\|zstd | %s / %s | |\n' "$(stat -c %s "$work/a.tar.zst")" "$(stat -c %s "$work/b.tar.zst")"
