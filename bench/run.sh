#!/usr/bin/env bash
# Side-by-side benchmark: deeplake-rs vs deeplake 3.9.52 vs deeplake 4.7.4.
#
#   bash bench/run.sh [N]        (N rows, default 2000)
#
# Builds bench-ours in release, generates the data set once (cached by N, seed and
# generator version), then runs ours and both peers REPS times each, interleaved so that
# a change in machine load hits every system alike. Writes bench/results/latest.json and
# prints a Markdown table with medians, ratios and PASS/FAIL per target. The targets are
# reported, not enforced: the script fails only if a step crashes.
#
# Environment: BENCH_REPS (default 3), BENCH_SEED (data seed, default 20240601),
# BENCH_WORK (scratch folder for data and datasets, default target/bench).
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

N=${1:-2000}
REPS=${BENCH_REPS:-3}
SEED=${BENCH_SEED:-20240601}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive integer, got '$REPS'"
[ "$(uname -s)" = Linux ] || die "bench-ours reads CPU time from /proc; Linux only"

log "building bench-ours (release)"
cargo build --release --quiet -p deeplake-bench
OURS=$REPO_ROOT/target/release/bench-ours

DL3=$(dl3_venv)
DL4=$(dl4_venv)

DATA=$(bench_data "$N" "$SEED" "$WORK" "$DL3")

RUNS=$WORK/runs
DS=$WORK/datasets
rm -rf "$RUNS" "$DS"
mkdir -p "$RUNS" "$DS"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep/$REPS: ours"
    "$OURS" --data "$DATA" --out "$DS/ours" >"$RUNS/ours-$rep.json"
    for peer in dl3 dl4; do
        log "repetition $rep/$REPS: $peer"
        py=$DL3/bin/python
        [ "$peer" = dl4 ] && py=$DL4/bin/python
        # deeplake 3 prints version warnings and "loaded successfully" lines; keep them
        # out of the JSON on stdout.
        "$py" bench/peers.py --peer "$peer" --data "$DATA" --out "$DS/$peer" \
            >"$RUNS/$peer-$rep.json" 2>"$RUNS/$peer-$rep.log" ||
            {
                tail -n 30 "$RUNS/$peer-$rep.log" >&2
                die "$peer run $rep failed (log: $RUNS/$peer-$rep.log)"
            }
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

printf '{"load_before": "%s", "load_after": "%s", "cpu_model": "%s"}\n' \
    "$load_before" "$load_after" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/"//g')" >"$RUNS/env.json"

mkdir -p bench/results
python3 bench/report.py --manifest "$DATA/manifest.json" --env "$RUNS/env.json" \
    --out bench/results/latest.json "$RUNS"/ours-*.json "$RUNS"/dl3-*.json "$RUNS"/dl4-*.json
