#!/usr/bin/env bash
# The web visualizer in a real browser: writes three datasets with `deeplake demo`
# (`rich`: 60 annotated rows with every overlay htype, a sequence and a second branch;
# `images10k`: 10,000 images; `rows100k`: 100,000 rows), `rows1m` (1,000,000 rows whose
# link[image] tensor points at 16 PNG tiles, with `deeplake import --from-urls`) and
# `media` (link[image], audio and video tensors, written by deeplake 3.x from files it
# generates beside the datasets: PNG, WAV, H.264 MP4), starts `deeplake serve` on
# 127.0.0.1:0 over them (and a second one that needs a token), runs integration-tests/web with node's test runner
# (playwright-core driving Debian's chromium), then stops the servers by their PIDs.
# Screenshots and measured figures go to target/web-test/ (or DEEPLAKE_VIZ_OUT).
# Builds nothing: DEEPLAKE_BIN names the `deeplake` binary (default target/debug).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ensure_chromium
modules=$(web_modules)
dl3=$(dl3_venv)/bin/python
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=${DEEPLAKE_BIN:-$target/debug/deeplake}
[ -x "$bin" ] || die "no deeplake binary at $bin (build it first, or set DEEPLAKE_BIN)"
out=${DEEPLAKE_VIZ_OUT:-$target/web-test}
mkdir -p "$out"

tmp=$(mktemp -d)
pid=
pid2=
cleanup() {
    for p in $pid $pid2; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p"
            wait "$p" || true
        fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

start=$(date +%s)
"$bin" demo "$tmp/root/rich" --rows 60 --size 96 --annotations >/dev/null &
p1=$!
"$bin" demo "$tmp/root/images10k" --rows 10000 --size 64 >/dev/null &
p2=$!
"$dl3" integration-tests/web/media_dataset.py "$tmp/root/media" "$tmp/files/media" >/dev/null &
p3=$!
python3 integration-tests/web/link_rows.py "$tmp/files/tiles" 1000000
"$bin" import "$tmp/root/rows1m" --from-urls "$tmp/files/tiles/rows.csv" --no-verify --batch 50000 >/dev/null 2>"$tmp/import.err" &
p4=$!
"$bin" demo "$tmp/root/rows100k" --rows 100000 --size 16 >/dev/null
for p in "$p1" "$p2" "$p3"; do
    wait "$p"
done
wait "$p4" || die "importing rows1m failed: $(tail -n 5 "$tmp/import.err")"
log "datasets written in $(($(date +%s) - start)) s"

"$bin" serve --root "$tmp/root" --bind 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
pid=$!
addr=$(wait_for_serve "$pid" "$tmp/serve.out" "$tmp/serve.err")
# A second server over the same root that needs a read token (the page's token flow).
new=$("$bin" token new)
token=$(awk '$1 == "token" {print $2}' <<<"$new")
hash=$(awk '$1 == "sha256" {print $2}' <<<"$new")
if [ -z "$token" ] || [ -z "$hash" ]; then
    die "deeplake token new printed no token"
fi
DEEPLAKE_TOKENS="[{\"name\": \"viz\", \"sha256\": \"$hash\", \"scope\": \"read\"}]" \
    "$bin" serve --root "$tmp/root" --bind 127.0.0.1:0 >"$tmp/serve2.out" 2>"$tmp/serve2.err" &
pid2=$!
addr2=$(wait_for_serve "$pid2" "$tmp/serve2.out" "$tmp/serve2.err")

# node resolves `playwright-core` from a node_modules folder beside the tests; the
# cached install is linked there (the link is ignored by git).
ln -sfn "$modules" integration-tests/web/node_modules
DEEPLAKE_VIZ_URL=$addr DEEPLAKE_VIZ_TOKEN_URL=$addr2 DEEPLAKE_VIZ_TOKEN=$token DEEPLAKE_VIZ_OUT=$out \
    DEEPLAKE_VIZ_MEDIA_FILES=$tmp/files/media \
    node --test --test-reporter=spec integration-tests/web/viz.test.mjs
log "screenshots and figures: $out"
for f in "$out"/*.txt; do
    [ -f "$f" ] && log "$(basename "$f"): $(tr '\n' ' ' <"$f")"
done
