#!/usr/bin/env bash
# TQL side by side with deeplake 4.7.4 on the same data: a table of ROWS rows (id,
# label, score, grp, text; two versions) and EMB_ROWS embeddings of 512 floats.
#
#   bash bench/run_tql.sh [ROWS] [EMB_ROWS] [REPS]     (default 1000000 100000 5)
#
# Writes bench/results/tql.json and prints medians and ratios (dl4 time / ours: above 1
# means we are faster; the target is 2).
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

ROWS=${1:-1000000}
EMB=${2:-100000}
REPS=${3:-5}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}/tql-$ROWS-$EMB
[[ $ROWS =~ ^[1-9][0-9]*$ && $EMB =~ ^[1-9][0-9]*$ && $REPS =~ ^[1-9][0-9]*$ ]] ||
    die "ROWS, EMB_ROWS and REPS must be positive integers"

log "building bench-tql (release)"
cargo build --release --quiet -p deeplake-bench
BIN=$REPO_ROOT/target/release/bench-tql
PY="$(dl4_venv)/bin/python"

mkdir -p "$WORK/ours" "$WORK/dl4" bench/results
if [ ! -f "$WORK/ours/queries.json" ]; then
    log "building our datasets ($ROWS rows, $EMB embeddings)"
    "$BIN" build --out "$WORK/ours" --rows "$ROWS" --emb-rows "$EMB" >"$WORK/ours-build.json"
fi
if [ ! -f "$WORK/dl4/.built" ]; then
    log "building deeplake 4.7.4 datasets"
    rm -rf "$WORK/dl4" && mkdir -p "$WORK/dl4"
    "$PY" bench/tql_peer.py build --out "$WORK/dl4" --rows "$ROWS" --emb-rows "$EMB" >"$WORK/dl4-build.json"
    touch "$WORK/dl4/.built"
fi
log "running queries ($REPS repetitions each after a warm-up)"
"$BIN" run --out "$WORK/ours" --reps "$REPS" >"$WORK/ours-run.json"
"$PY" bench/tql_peer.py run --out "$WORK/dl4" --queries "$WORK/ours/queries.json" --reps "$REPS" >"$WORK/dl4-run.json"

python3 - "$WORK" "$ROWS" "$EMB" <<'PY'
import json, os, sys, platform
w, rows, emb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ours = json.load(open(os.path.join(w, "ours-run.json")))["queries"]
dl4 = json.load(open(os.path.join(w, "dl4-run.json")))["queries"]
out = {"rows": rows, "emb_rows": emb, "load": os.getloadavg(), "cpus": os.cpu_count(),
       "ours": ours, "dl4": dl4, "ratio_dl4_over_ours": {}}
print(f"| query | ours median (s) | dl4 median (s) | dl4 / ours | rows ours / dl4 | target 2x |")
print("| --- | ---: | ---: | ---: | --- | --- |")
for k, v in ours.items():
    p = dl4.get(k, {})
    if "median_s" in p:
        r = p["median_s"] / v["median_s"]
        out["ratio_dl4_over_ours"][k] = r
        print(f"| {k} | {v['median_s']:.4f} | {p['median_s']:.4f} | {r:.2f} | {v['rows']} / {p['rows']} | {'PASS' if r >= 2 else 'FAIL'} |")
    else:
        print(f"| {k} | {v['median_s']:.4f} | n/a | n/a | {v['rows']} / - | {p.get('skipped', '')} |")
json.dump(out, open("bench/results/tql.json", "w"), indent=1)
PY
