#!/usr/bin/env bash
# difflog-sync benchmark against a local MLflow server started here.
#   benches/sync.sh [--quick]
# Prints a Markdown table and one JSON line; figures are ratios measured in
# the same run against the same server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin difflog --bin difflog-sync >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/difflog-syncbench.XXXXXX")
read -r url pgid < <(scripts/mlflow-server "$work/server") || { echo "cannot start MLflow" >&2; exit 1; }
trap 'kill -- -"$pgid" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 benches/sync_bench.py "$url" target/release "$work" "$@"
