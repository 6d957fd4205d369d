#!/usr/bin/env bash
# Transform benchmark: resize to 128x128 + label % 5 over N JPEGs (bench/gen_data.py,
# 256x256) into a dataset with one commit, with T workers each:
#   (a) ours, Rust: `deeplake transform --meta` (a rayon pool of T threads);
#   (b) ours, Python: `@deeplake_rs.compute` with T processes sending rows to a daemon;
#   (c) deeplake 3.9.52: `@deeplake.compute`, scheduler="processed", num_workers=T;
#   (d) the bare function in a pool of T processes (no dataset): the least any
#       scheduler of this Python function can take.
# (b), (c) and (d) run the function on the same Pillow and numpy (checked).
# Goal: deeplake 3.9.52's time / ours >= 2.
#
#   bash bench/run_transform.sh [N] [REPS]        (default 10000 1)
#   BENCH_THREADS=4 bash bench/run_transform.sh   (default: 2)
#
# Medians of REPS runs; writes bench/results/transform.json and prints a Markdown table.
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

N=${1:-10000}
REPS=${2:-1}
THREADS=${BENCH_THREADS:-2}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}/transform
for v in "$N" "$REPS" "$THREADS"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || die "N, REPS and BENCH_THREADS must be positive integers"
done

DL3=$(dl3_venv)
PYBENCH=$(transform_bench_venv)
libs() { "$1/bin/python" -c 'import PIL, numpy; print(PIL.__version__, numpy.__version__)'; }
[ "$(libs "$DL3")" = "$(libs "$PYBENCH")" ] ||
    die "Pillow/numpy differ: deeplake 3.9.52 has $(libs "$DL3"), ours has $(libs "$PYBENCH"); update scripts/requirements/transform-bench.txt"
DATA=$(bench_data "$N" 0 "${BENCH_WORK:-$REPO_ROOT/target/bench}" "$DL3")
log "building deeplake (release)"
cargo build --release --quiet -p deeplake-daemon --bin deeplake
BIN=$REPO_ROOT/target/release/deeplake

rm -rf "$WORK"
mkdir -p "$WORK/root" bench/results
SERVE_PID=
cleanup() {
    if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" serve --root "$WORK/root" --bind 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
ADDR=
for _ in $(seq 1 200); do
    ADDR=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/serve.out" | head -n1 || true)
    [ -n "$ADDR" ] && break
    sleep 0.05
done
[ -n "$ADDR" ] || die "the daemon did not start: $(tail -n 20 "$WORK/serve.log")"

: >"$WORK/runs.jsonl"
# Every run's output stays until the end: ext4 scans past the inodes of files deleted
# in the last minutes for each file it creates, so a run that follows the deletion of
# the previous output would measure that (see the connector bench).
for rep in $(seq 1 "$REPS"); do
    log "rep $rep/$REPS: Rust threads ($THREADS)"
    "$BIN" transform --meta "$DATA/meta.jsonl" --to "$WORK/rust-$rep" --resize 128x128 \
        --relabel-mod 5 --workers "$THREADS" 2>/dev/null |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"mode":"rust","rows":r["input_rows"],"seconds":r["seconds"]}))' \
            >>"$WORK/runs.jsonl"
    log "rep $rep/$REPS: Python processes through the daemon ($THREADS)"
    "$PYBENCH/bin/python" bench/transform_peer.py --mode ours --data "$DATA" --workers "$THREADS" \
        --daemon "$ADDR" >>"$WORK/runs.jsonl"
    log "rep $rep/$REPS: deeplake 3.9.52 @deeplake.compute ($THREADS)"
    "$DL3/bin/python" bench/transform_peer.py --mode dl3 --data "$DATA" --workers "$THREADS" \
        --out "$WORK/dl3-$rep" 2>/dev/null | grep '^{' >>"$WORK/runs.jsonl"
    log "rep $rep/$REPS: the bare function in a pool ($THREADS)"
    "$DL3/bin/python" bench/transform_peer.py --mode bare --data "$DATA" --workers "$THREADS" \
        >>"$WORK/runs.jsonl"
done

python3 - "$WORK/runs.jsonl" "$N" "$THREADS" "$REPS" <<'PY'
import json, os, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n, threads, reps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
med = {m: statistics.median(r["seconds"] for r in runs if r["mode"] == m) for m in ("rust", "ours", "dl3", "bare")}
out = {
    "rows": n, "threads": threads, "reps": reps,
    "transform": "decode JPEG 256x256, resize to 128x128 (bilinear), label % 5, store images as JPEG",
    "seconds": med,
    "samples_per_s": {m: n / s for m, s in med.items()},
    "ratio_dl3_over_rust": med["dl3"] / med["rust"],
    "ratio_dl3_over_python": med["dl3"] / med["ours"],
    "ratio_dl3_over_bare": med["dl3"] / med["bare"],
    "libs": sorted({f'Pillow {r["pillow"]}, numpy {r["numpy"]}' for r in runs if "pillow" in r}),
    "goal": 2.0,
    "runs": runs,
    "load": os.getloadavg(),
    "cpus": os.cpu_count(),
}
ok = lambda r: "PASS" if r >= 2.0 else "FAIL"
print(f"| {n} JPEGs, {threads} workers | median (s) | samples/s | deeplake 3.9.52 / this | goal |")
print("| --- | ---: | ---: | ---: | --- |")
print(f"| ours, Rust threads (`deeplake transform`) | {med['rust']:.2f} | {n / med['rust']:.0f} | {out['ratio_dl3_over_rust']:.2f} | >= 2 {ok(out['ratio_dl3_over_rust'])} |")
print(f"| ours, Python processes (`@deeplake_rs.compute`) | {med['ours']:.2f} | {n / med['ours']:.0f} | {out['ratio_dl3_over_python']:.2f} | >= 2 {ok(out['ratio_dl3_over_python'])} |")
print(f"| deeplake 3.9.52 `@deeplake.compute` | {med['dl3']:.2f} | {n / med['dl3']:.0f} | 1.00 | |")
print(f"| the bare Python function, {threads} processes | {med['bare']:.2f} | {n / med['bare']:.0f} | {out['ratio_dl3_over_bare']:.2f} | (bound for Python) |")
json.dump(out, open("bench/results/transform.json", "w"), indent=1)
PY
