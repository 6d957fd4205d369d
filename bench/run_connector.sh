#!/usr/bin/env bash
# Benchmark of the Airbyte destination on replayed message files (bench/connector.py).
#
#   bash bench/run_connector.sh [RECORDS]     (default 500000)
#
# Builds destination-deeplake in release, generates the message files once into
# BENCH_WORK (default target/bench-connector) with shared/airbyte/gen_messages.py, runs
# the measurements and writes bench/results/connector.json. Targets are reported, not
# enforced: the script fails only if a step crashes.
set -euo pipefail
# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

RECORDS=${1:-500000}
[[ $RECORDS =~ ^[1-9][0-9]*$ ]] || die "RECORDS must be a positive integer, got '$RECORDS'"
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench-connector}
[ -f "$REPO_ROOT/../shared/airbyte/gen_messages.py" ] || die "shared/airbyte/gen_messages.py not found beside the repository"

log "building destination-deeplake (release)"
cargo build --release --quiet -p deeplake-connector
python3 bench/connector.py --bin "$REPO_ROOT/target/release/destination-deeplake" \
    --work "$WORK" --out bench/results/connector.json --records "$RECORDS" \
    --reps "${BENCH_REPS:-3}"
