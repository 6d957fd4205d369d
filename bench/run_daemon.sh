#!/usr/bin/env bash
# Load bench of `deeplake serve` on loopback with wrk: single-sample reads (a spread of
# indices; the stored JPEG, the decoded image as JSON, a label as JSON) and small TQL
# queries, against a local root holding a generated dataset (`deeplake demo`: JPEG
# images, class labels, boxes, captions).
#
#   bash bench/run_daemon.sh [ROWS] [SECONDS] [CONNECTIONS]    (default 2000 10 32)
#
# Installs wrk through scripts/lib.sh (apt, once), builds the release CLI, generates the
# dataset once under target/bench/, starts the server with a read token, warms it (one
# pass over every case), measures each case, stops the server by its PID, and writes
# bench/results/daemon.json plus one Markdown line per case. Target: cached single-sample
# reads at >= 5,000 req/s with p99 < 10 ms on 2 cores (server and wrk share the
# machine's cores); each single-sample case is marked PASS or FAIL.
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

ROWS=${1:-2000}
SECS=${2:-10}
CONNS=${3:-32}
[[ $ROWS =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ && $CONNS =~ ^[1-9][0-9]*$ ]] ||
    die "ROWS, SECONDS and CONNECTIONS must be positive integers"
THREADS=${BENCH_WRK_THREADS:-2}
TARGET_RPS=5000
TARGET_P99_MS=10
WORK=${BENCH_WORK:-$REPO_ROOT/target/bench}/daemon-$ROWS

ensure_wrk
log "building deeplake (release)"
cargo build --release --locked --quiet -p deeplake-daemon --bin deeplake
BIN=$REPO_ROOT/target/release/deeplake

mkdir -p "$WORK" bench/results
if [ ! -f "$WORK/root/bench/.complete" ]; then
    log "generating $ROWS rows into $WORK/root/bench"
    rm -rf "$WORK/root"
    "$BIN" demo "$WORK/root/bench" --rows "$ROWS" --size 64 >/dev/null
    touch "$WORK/root/bench/.complete"
fi

new=$("$BIN" token new)
token=$(awk '$1 == "token" {print $2}' <<<"$new")
hash=$(awk '$1 == "sha256" {print $2}' <<<"$new")
[ -n "$token" ] && [ -n "$hash" ] || die "deeplake token new printed no token"

out=$WORK/run
rm -rf "$out" && mkdir -p "$out"
pid=
stop_server() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    pid=
}
trap stop_server EXIT
: >"$out/serve.out"
DEEPLAKE_TOKENS="[{\"name\": \"bench\", \"sha256\": \"$hash\", \"scope\": \"read\"}]" \
    "$BIN" serve --root "$WORK/root" --bind 127.0.0.1:0 >"$out/serve.out" 2>"$out/serve.log" &
pid=$!
addr=$(wait_for_serve "$pid" "$out/serve.out" "$out/serve.log")
log "serving at $addr (pid $pid)"

samples=/datasets/bench/tensors
queries='SELECT labels WHERE labels == 1|SELECT labels, captions WHERE labels == 2 LIMIT 20|SELECT * WHERE labels != 0 ORDER BY labels LIMIT 5|SELECT labels WHERE CONTAINS(captions, '\''circle'\'')'
# name | mode | path | suffix | single-sample (target applies)
cases=(
    "image_raw|sample|$samples/images/samples/|?format=raw|1"
    "image_json|sample|$samples/images/samples/||1"
    "label_json|sample|$samples/labels/samples/||1"
    "tql_small|query|/datasets/bench/query||0"
)

run_case() { # NAME MODE PATH SUFFIX SECONDS OUTFILE
    BENCH_MODE=$2 BENCH_PATH=$3 BENCH_SUFFIX=$4 BENCH_ROWS=$ROWS BENCH_TOKEN=$token \
        BENCH_QUERY_PATH=$3 BENCH_QUERIES=$queries BENCH_OUT=$6 \
        wrk -t "$THREADS" -c "$CONNS" -d "${5}s" --latency -s bench/wrk/daemon.lua "$addr" >"$6.txt"
}

# Warm-up: every index of every case is read at least once (the read handles, the
# chunk bytes and the query plans are cached from then on).
for c in "${cases[@]}"; do
    IFS='|' read -r name mode path suffix _ <<<"$c"
    log "warming $name"
    run_case "$name" "$mode" "$path" "$suffix" 3 "$out/warm-$name.json"
done

results=()
for c in "${cases[@]}"; do
    IFS='|' read -r name mode path suffix single <<<"$c"
    log "measuring $name (${SECS}s, $CONNS connections)"
    run_case "$name" "$mode" "$path" "$suffix" "$SECS" "$out/$name.json"
    results+=("$name|$single|$out/$name.json")
done
stop_server

python3 - "$ROWS" "$SECS" "$CONNS" "$THREADS" "$TARGET_RPS" "$TARGET_P99_MS" "${results[@]}" <<'PY'
import json, os, platform, sys
rows, secs, conns, threads, target_rps, target_p99 = sys.argv[1:7]
cases = []
for spec in sys.argv[7:]:
    name, single, path = spec.split("|")
    with open(path) as f:
        r = json.load(f)
    r["name"] = name
    if single == "1":
        ok = r["rps"] >= float(target_rps) and r["p99_ms"] < float(target_p99) and r["errors"] == 0
        r["target"] = "PASS" if ok else "FAIL"
    else:
        r["target"] = None
    cases.append(r)
report = {
    "rows": int(rows),
    "seconds": int(secs),
    "connections": int(conns),
    "wrk_threads": int(threads),
    "cpus": os.cpu_count(),
    "load": list(os.getloadavg()),
    "machine": platform.machine(),
    "target": {"rps": int(target_rps), "p99_ms": float(target_p99)},
    "cases": cases,
}
with open("bench/results/daemon.json", "w") as f:
    json.dump(report, f, indent=1)
    f.write("\n")
print(f"| case | req/s | p50 ms | p99 ms | errors | target (>= {target_rps} req/s, p99 < {target_p99} ms) |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for r in cases:
    print(f"| {r['name']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {r['target'] or 'n/a'} |")
PY
