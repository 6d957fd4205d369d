#!/usr/bin/env bash
# Loader benchmark: deeplake-rs streaming (in-process, and through the daemon with the
# Python client) against deeplake 4.7.4's loader, Lance, WebDataset and a plain PyTorch
# DataLoader over the JPEG folder, on the same data (bench/gen_data.py: N JPEGs of
# 256x256 with labels) on local disk, then (ours, deeplake 4.7.4 and Lance, the peers
# that read object storage natively) on the real S3-compatible server.
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
S3_STARTED=
cleanup() {
    for p in ${serve_pid:-} ${serve_s3_pid:-}; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    if [ -n "${S3_ROOT:-}" ]; then
        for d in root/ours lance dl4; do
            "$REL/bench-stream" --dataset "$S3_ROOT/$d" --delete >/dev/null 2>&1 || true
        done
    fi
    [ -n "$S3_STARTED" ] && bash scripts/s3.sh stop >/dev/null 2>&1
    rm -rf "$DS"
}
trap cleanup EXIT

log "writing the formats (untimed)"
# bench-ours writes our dataset and measures the JPEG-decode limit of these files.
"$REL/bench-ours" --data "$DATA" --out "$DS/root/ours" --random-reads 10 >"$RUNS/decode.json"
"$DL4/bin/python" bench/peers.py --peer dl4 --write-only --data "$DATA" --out "$DS/dl4" >/dev/null
"$PY/bin/python" bench/loaders.py --prepare webdataset --data "$DATA" --out "$DS/wds"
"$PY/bin/python" bench/loaders.py --prepare lance --data "$DATA" --out "$DS/lance"

log "copying ours, deeplake 4.7.4 and Lance onto the S3 server (untimed)"
if ! bash scripts/s3.sh status >/dev/null 2>&1; then
    bash scripts/s3.sh start
    S3_STARTED=1
fi
eval "$(bash scripts/s3.sh env)"
S3_ROOT=s3://$DEEPLAKE_TEST_S3_BUCKET/bench-stream-$$
"$REL/bench-stream" --copy-from "$DS/root/ours" --dataset "$S3_ROOT/root/ours" --epochs 0 >/dev/null
"$DL4/bin/python" bench/loaders.py --prepare deeplake4_s3 --data "$DS/dl4" --out "$S3_ROOT/dl4"
"$PY/bin/python" bench/loaders.py --prepare lance --data "$DATA" --out "$S3_ROOT/lance"

serve_pid=
: >"$RUNS/serve.out"
"$REL/deeplake" serve --root "$DS/root" --bind 127.0.0.1:0 >"$RUNS/serve.out" 2>"$RUNS/serve.log" &
serve_pid=$!
addr=$(wait_for_serve "$serve_pid" "$RUNS/serve.out" "$RUNS/serve.log")
serve_s3_pid=
: >"$RUNS/serve-s3.out"
"$REL/deeplake" serve --root "$S3_ROOT/root" --bind 127.0.0.1:0 >"$RUNS/serve-s3.out" 2>"$RUNS/serve-s3.log" &
serve_s3_pid=$!
addr_s3=$(wait_for_serve "$serve_s3_pid" "$RUNS/serve-s3.out" "$RUNS/serve-s3.log")

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
    log "repetition $rep/$REPS on S3"
    "$REL/bench-stream" --dataset "$S3_ROOT/root/ours" --epochs "$EPOCHS" --shuffle |
        sed 's/"ours_inprocess"/"ours_inprocess_s3"/' >"$RUNS/ours_inprocess_s3-$rep.json"
    "$PY/bin/python" bench/loaders.py --loader ours_daemon --name ours_daemon_s3 --data "$DATA" \
        --src "$addr_s3/datasets/ours" --daemon-pid "$serve_s3_pid" --epochs "$EPOCHS" >"$RUNS/ours_daemon_s3-$rep.json"
    "$DL4/bin/python" bench/loaders.py --loader deeplake4 --name deeplake4_s3 --data "$DATA" --src "$S3_ROOT/dl4" \
        --epochs "$EPOCHS" >"$RUNS/deeplake4_s3-$rep.json" 2>"$RUNS/deeplake4_s3-$rep.err"
    "$PY/bin/python" bench/loaders.py --loader lance --name lance_s3 --data "$DATA" --src "$S3_ROOT/lance" \
        --epochs "$EPOCHS" >"$RUNS/lance_s3-$rep.json"
done

mkdir -p bench/results
python3 bench/report_stream.py "$RUNS" "$N" "$(cut -d' ' -f1-3 /proc/loadavg)" >bench/results/stream.json
python3 bench/report_stream.py --markdown bench/results/stream.json
