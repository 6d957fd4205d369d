#!/usr/bin/env bash
# Cost of history: reads at the head of a 1,000-commit chain against the same rows in
# one commit, and commit times early and late in the chain (see bench/src/versions.rs).
#
#   bash bench/run_versions.sh [N] [COMMITS]     (default 2000 rows, 1000 commits)
#
# Uses the data set of bench/run.sh (generated there if missing). Writes
# bench/results/versions.json and prints the ratios.
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

N=${1:-2000}
COMMITS=${2:-1000}
SEED=${BENCH_SEED:-20240601}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ $COMMITS =~ ^[1-9][0-9]*$ ]] || die "COMMITS must be a positive integer, got '$COMMITS'"

log "building bench-versions (release)"
cargo build --release --quiet -p deeplake-bench

gen_hash=$(sha256sum bench/gen_data.py | cut -c1-10)
DATA=$WORK/data/n$N-s$SEED-$gen_hash
if [ ! -f "$DATA/manifest.json" ]; then
    log "generating $N rows into $DATA"
    rm -rf "$DATA" "$DATA.tmp"
    mkdir -p "$WORK/data"
    "$(dl3_venv)/bin/python" bench/gen_data.py --n "$N" --seed "$SEED" --out "$DATA.tmp" >/dev/null
    mv "$DATA.tmp" "$DATA"
fi

mkdir -p bench/results
"$REPO_ROOT/target/release/bench-versions" --data "$DATA" --out "$WORK/versions" \
    --commits "$COMMITS" >bench/results/versions.json
rm -rf "$WORK/versions"
python3 - bench/results/versions.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{d['n']} rows, {d['commits']} commits (image chunks of {d['image_chunk_size'] >> 20} MiB)")
print("| read at main's head | one commit (s) | chain (s) | chain / one commit | target |")
print("| --- | ---: | ---: | ---: | --- |")
for k, v in d["read"].items():
    r = v["ratio_chain_over_fresh"]
    print(f"| {k} | {v['fresh_s']:.3f} | {v['chain_s']:.3f} | {r:.2f} | {'PASS' if r <= 1.2 else 'FAIL'} (<= 1.2) |")
c = d["commit_s"]
print(f"commit: first tenth {c['chain_first_tenth_median']*1e3:.1f} ms, last tenth "
      f"{c['chain_last_tenth_median']*1e3:.1f} ms (x{c['ratio_late_over_early']:.2f}); one row on 10 rows "
      f"{c['one_row_on_10_rows']*1e3:.1f} ms vs on {d['n']} rows {c['one_row_on_full']*1e3:.1f} ms "
      f"(x{c['ratio_full_over_small']:.2f})")
PY
