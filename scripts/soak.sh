#!/usr/bin/env bash
# The soak run (bench/README.md): scripts/soak.sh [SECONDS] (default 600).
#
# Everything talks to the test S3 server (scripts/s3.sh, already started) through the
# fault-injecting proxy `deeplake-s3-faults` (500/503 SlowDown, added latency, dropped
# connections), under a fresh prefix s3://$DEEPLAKE_TEST_S3_BUCKET/soak-<pid>/ that is
# deleted at the end: the connector syncing a replayed source with SIGKILLs and resumes,
# the daemon under a steady query and stream load, a transform and a materialization
# (scripts/soak.py). Writes target/soak/soak.json (time series, summary, checks) and
# target/soak/soak.png; exits non-zero if any check failed. Every process it starts is
# bounded in time and stopped by its pid.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

DURATION=${1:-600}
[[ $DURATION =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 30 ] || die "SECONDS must be a whole number >= 30, got $DURATION"

bash scripts/s3.sh status >/dev/null || die "the S3 test server is not running: bash scripts/s3.sh start"
eval "$(bash scripts/s3.sh env)"
DL3=$(dl3_venv)
PLOT=$(ensure_venv plot "$REPO_ROOT/scripts/requirements/plot.txt")

cargo build --locked --workspace --bins
TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/debug

OUT=$TARGET/soak
WORK=$OUT/run
rm -rf "$WORK"
mkdir -p "$WORK/images"
PREFIX="soak-$$"
URL="s3://$DEEPLAKE_TEST_S3_BUCKET/$PREFIX"

# Images for the transform: a seeded set of small JPEGs and their labels.
"$DL3/bin/python" - "$WORK/images" <<'EOF'
import json, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(5)
with open(f"{out}/meta.jsonl", "w") as f:
    for i in range(60):
        h, w = 40 + i % 7, 48 + i % 5
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f"{out}/{i}.jpg", quality=90)
        f.write(json.dumps({"file": f"{out}/{i}.jpg", "label": i % 10}) + "\n")
EOF

PROXY_PID=
cleanup() {
    if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then kill "$PROXY_PID" || true; fi
    # The run's objects, read straight from the server (no faults).
    "$DL3/bin/python" - "$DEEPLAKE_TEST_S3_BUCKET" "$PREFIX/" <<'EOF' || log "deleting the soak prefix failed"
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"], region_name=os.environ["AWS_REGION"],
                  aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])
bucket, prefix = sys.argv[1], sys.argv[2]
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
    if keys:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
EOF
}
trap cleanup EXIT

# Seeded faults: 2% of requests answered 500/503, 1% dropped connections (GETs mid-body),
# 5% delayed by 150 ms. The proxy stops by itself well after the run's own bound.
"$BIN/deeplake-s3-faults" --upstream "$AWS_ENDPOINT" --seed 11 --error-rate 0.02 --reset-rate 0.01 \
    --latency-rate 0.05 --latency-ms 150 --max-seconds $((DURATION + 900)) \
    --stats-file "$WORK/faults.json" >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
PROXY_PID=$!
PROXY=
for _ in $(seq 1 100); do
    PROXY=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$WORK/proxy.out")
    [ -n "$PROXY" ] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.err" >&2; die "deeplake-s3-faults exited"; }
    sleep 0.1
done
[ -n "$PROXY" ] || die "deeplake-s3-faults printed no address"
log "fault proxy at $PROXY (pid $PROXY_PID), run prefix $URL, $DURATION s"

rc=0
python3 scripts/soak.py --seconds "$DURATION" --work "$WORK" --url "$URL" --proxy "$PROXY" \
    --real-endpoint "$AWS_ENDPOINT" --connector "$BIN/destination-deeplake" \
    --deeplake "$BIN/deeplake" --dl3-python "$DL3/bin/python" || rc=$?

# The proxy ends on SIGTERM and writes its counters; it must exit 0.
kill "$PROXY_PID"
proxy_rc=0
wait "$PROXY_PID" || proxy_rc=$?
PROXY_PID=
if [ "$proxy_rc" -ne 0 ] || [ ! -s "$WORK/faults.json" ]; then
    log "FAIL the fault proxy exited with $proxy_rc (counters: $(cat "$WORK/faults.json" 2>/dev/null))"
    rc=1
fi
log "faults injected: $(cat "$WORK/faults.json")"

if [ -f "$WORK/soak.json" ]; then
    cp "$WORK/soak.json" "$OUT/soak.json"
    "$PLOT/bin/python" scripts/soak_plot.py "$OUT/soak.json" "$OUT/soak.png" || rc=1
    log "wrote $OUT/soak.json and $OUT/soak.png"
else
    rc=1
fi
exit "$rc"
