#!/usr/bin/env bash
# Link reads through the linker against a local HTTP server that adds a fixed latency to
# every response: N image links read at each concurrency, requests/s and MB/s against the
# ideal (concurrency / latency).
#
#   bash bench/run_links.sh [N] [LATENCY_MS] [REPS]     (default 400 20 3)
#
# Writes bench/results/links.json and prints a table.
set -euo pipefail

# shellcheck source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

N=${1:-400}
LATENCY=${2:-20}
REPS=${3:-3}
[[ $N =~ ^[1-9][0-9]*$ && $LATENCY =~ ^[0-9]+$ && $REPS =~ ^[1-9][0-9]*$ ]] ||
    die "N, LATENCY_MS and REPS must be positive integers"

log "building bench-links (release)"
cargo build --release --quiet -p deeplake-bench --bin bench-links
mkdir -p bench/results
log "reading $N links at ${LATENCY} ms per response"
"$REPO_ROOT/target/release/bench-links" --n "$N" --latency-ms "$LATENCY" --reps "$REPS" \
    --concurrency 1,8,32,64 >bench/results/links.json

python3 - <<'PY'
import json, os
r = json.load(open("bench/results/links.json"))
r["load"] = os.getloadavg()
r["cpus"] = os.cpu_count()
json.dump(r, open("bench/results/links.json", "w"), indent=1)
print(f"{r['n']} links, {r['image_bytes_mean'] / 1024:.1f} KiB each, {r['latency_ms']} ms per response")
print("| concurrency | median (s) | requests/s | ideal requests/s | efficiency | MB/s | ideal MB/s | server max in flight |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for x in r["results"]:
    print(f"| {x['concurrency']} | {x['median_s']:.3f} | {x['requests_per_s']:.1f} | {x['ideal_requests_per_s']:.1f} | "
          f"{x['efficiency']:.2f} | {x['mb_per_s']:.2f} | {x['ideal_mb_per_s']:.2f} | {x['server_max_in_flight']} |")
PY
