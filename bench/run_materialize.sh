#!/usr/bin/env bash
# Materialization benchmark (bench-materialize): (a) FILES local JPEG links materialized
# against a plain parallel copy of the same files with the same thread count (goal:
# copy time / materialize time >= 0.8); (b) every STEP-th row of a ROWS-row image
# dataset streamed decoded from the materialized copy against the same rows read as a
# sparse view of the source.
#
#   bash bench/run_materialize.sh [FILES] [ROWS] [STEP] [REPS]    (default 10000 70000 7 3)
#   BENCH_THREADS=4 bash bench/run_materialize.sh                  (default: 2)
#
# Medians of REPS runs; writes bench/results/materialize.json. The data is generated
# under target/ and deleted at the end.
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

FILES=${1:-10000}
ROWS=${2:-70000}
STEP=${3:-7}
REPS=${4:-3}
THREADS=${BENCH_THREADS:-2}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}/materialize
for v in "$FILES" "$ROWS" "$STEP" "$REPS" "$THREADS"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || die "FILES, ROWS, STEP, REPS and BENCH_THREADS must be positive integers"
done

log "building bench-materialize (release)"
cargo build --release --quiet -p deeplake-bench --bin bench-materialize
BIN=$REPO_ROOT/target/release/bench-materialize

rm -rf "$WORK"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK" bench/results
log "running ($FILES link files; $ROWS rows, every ${STEP}th; $REPS repetitions; $THREADS threads)"
"$BIN" --work "$WORK" --files "$FILES" --rows "$ROWS" --step "$STEP" --reps "$REPS" \
    --threads "$THREADS" >"$WORK/run.json"

python3 - "$WORK/run.json" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
r["load"] = os.getloadavg()
r["cpus"] = os.cpu_count()
a, b = r["links"], r["stream"]
print("| measure | median (s) | compared with | median (s) | ratio | goal |")
print("| --- | ---: | --- | ---: | ---: | --- |")
ok = "PASS" if a["ratio_copy_over_materialize"] >= a["goal"] else "FAIL"
print(f"| materialize {a['files']} links ({a['bytes'] / 1e6:.1f} MB) | {a['materialize_median_s']:.3f} "
      f"| parallel file copy, synced | {a['copy_median_s']:.3f} | {a['ratio_copy_over_materialize']:.2f} (copy / ours) | >= 0.8 {ok} |")
print(f"| (same) | | parallel file copy, not synced | {a['copy_unsynced_median_s']:.3f} "
      f"| {a['ratio_unsynced_copy_over_materialize']:.2f} (copy / ours) | report |")
print(f"| stream {b['rows']} rows, materialized | {b['materialized_median_s']:.3f} "
      f"| sparse view (every {b['step']}th of {b['source_rows']}) | {b['sparse_median_s']:.3f} "
      f"| {b['ratio_sparse_over_materialized']:.2f} (sparse / materialized) | report |")
json.dump(r, open("bench/results/materialize.json", "w"), indent=1)
PY
