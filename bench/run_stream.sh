#!/usr/bin/env bash
# Loader benchmark: deeplake-rs streaming (in-process, and through the daemon with the
# Python client) against deeplake 4.7.4's loader, Lance, WebDataset and a plain PyTorch
# DataLoader over the JPEG folder, on the same data (bench/gen_data.py: N JPEGs of
# 256x256 with labels) on local disk.
#
#   bash bench/run_stream.sh [N]        (N rows, default 2000)
#
# Each loader delivers every image of an epoch as a decoded uint8 array, EPOCHS epochs
# per run, REPS runs interleaved. Reported per loader (medians over runs of the
# epochs after the first): images/s, images per CPU-second (the process, its workers and,
# for ours through the daemon, the daemon), MB/s of pixels, time to the first batch
# (first epoch, cold process), and peak resident memory. The goals are compared with
# the machine's JPEG-decode limit measured by bench-ours on the same files.
# Writes bench/results/stream.json and prints a Markdown table.
#
# Environment: BENCH_REPS (default 3), BENCH_EPOCHS (default 3), BENCH_SEED,
# BENCH_WORK (scratch, default target/bench).
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

N=${1:-2000}
REPS=${BENCH_REPS:-3}
EPOCHS=${BENCH_EPOCHS:-3}
SEED=${BENCH_SEED:-20240601}
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"

log "building bench-ours, bench-stream and deeplake (release)"
cargo build --release --quiet -p deeplake-bench -p deeplake-daemon
REL=$REPO_ROOT/target/release
DL3=$(dl3_venv)
DL4=$(dl4_venv)
PY=$(client_venv)

DATA=$(bench_data "$N" "$SEED" "$WORK" "$DL3")
DS=$WORK/stream-datasets
RUNS=$WORK/stream-runs
rm -rf "$DS" "$RUNS"
mkdir -p "$DS" "$RUNS"
cleanup() {
    [ -n "${serve_pid:-}" ] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -rf "$DS"
}
trap cleanup EXIT

log "writing the formats (untimed)"
# bench-ours writes our dataset and measures the JPEG-decode limit of these files.
"$REL/bench-ours" --data "$DATA" --out "$DS/root/ours" --random-reads 10 >"$RUNS/decode.json"
"$DL4/bin/python" bench/peers.py --peer dl4 --write-only --data "$DATA" --out "$DS/dl4" >/dev/null
"$PY/bin/python" bench/loaders.py --prepare webdataset --data "$DATA" --out "$DS/wds"
"$PY/bin/python" bench/loaders.py --prepare lance --data "$DATA" --out "$DS/lance"

serve_pid=
: >"$RUNS/serve.out"
"$REL/deeplake" serve --root "$DS/root" --bind 127.0.0.1:0 >"$RUNS/serve.out" 2>"$RUNS/serve.log" &
serve_pid=$!
addr=$(wait_for_serve "$serve_pid" "$RUNS/serve.out" "$RUNS/serve.log")

for rep in $(seq 1 "$REPS"); do
    log "repetition $rep/$REPS"
    "$REL/bench-stream" --dataset "$DS/root/ours" --epochs "$EPOCHS" --shuffle >"$RUNS/ours_inprocess-$rep.json"
    "$PY/bin/python" bench/loaders.py --loader ours_daemon --data "$DATA" --src "$addr/datasets/ours" \
        --daemon-pid "$serve_pid" --epochs "$EPOCHS" >"$RUNS/ours_daemon-$rep.json"
    "$DL4/bin/python" bench/loaders.py --loader deeplake4 --data "$DATA" --src "$DS/dl4" \
        --epochs "$EPOCHS" >"$RUNS/deeplake4-$rep.json" 2>"$RUNS/deeplake4-$rep.err"
    "$PY/bin/python" bench/loaders.py --loader lance --data "$DATA" --src "$DS/lance" --epochs "$EPOCHS" >"$RUNS/lance-$rep.json"
    "$PY/bin/python" bench/loaders.py --loader webdataset --data "$DATA" --src "$DS/wds" --epochs "$EPOCHS" >"$RUNS/webdataset-$rep.json"
    "$PY/bin/python" bench/loaders.py --loader torch_folder --data "$DATA" --epochs "$EPOCHS" >"$RUNS/torch_folder-$rep.json"
done

mkdir -p bench/results
python3 bench/report_stream.py "$RUNS" "$N" "$(cut -d' ' -f1-3 /proc/loadavg)" >bench/results/stream.json
python3 bench/report_stream.py --markdown bench/results/stream.json
