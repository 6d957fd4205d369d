#!/usr/bin/env bash
# Fuzzes the HTTP API from its committed OpenAPI document: builds the CLI, starts
# `deeplake serve` on 127.0.0.1 over a temporary root holding one small dataset (`d`)
# with an admin token, runs schemathesis against spec/openapi.json (every operation,
# valid and invalid inputs, a bounded number of examples each), then stops the server
# by its PID. Fails on any 5xx, and on any response whose status, content type,
# headers or body the document does not describe.
# Usage: scripts/schemathesis.sh    (SCHEMATHESIS_EXAMPLES, default 25; SCHEMATHESIS_SEED)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

venv=$(schemathesis_venv)
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --locked -p deeplake-daemon --bin deeplake
bin=${DEEPLAKE_BIN:-$target/debug/deeplake}

tmp=$(mktemp -d)
pid=
stop_server() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    pid=
}
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" demo "$tmp/root/d" --rows 12 --size 16 >/dev/null
new=$("$bin" token new)
token=$(awk '$1 == "token" {print $2}' <<<"$new")
hash=$(awk '$1 == "sha256" {print $2}' <<<"$new")
[ -n "$token" ] && [ -n "$hash" ] || die "deeplake token new printed no token"
: >"$tmp/serve.out"
DEEPLAKE_TOKENS="[{\"name\": \"fuzz\", \"sha256\": \"$hash\", \"scope\": \"admin\"}]" \
    "$bin" serve --root "$tmp/root" --bind 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.log" &
pid=$!
addr=$(wait_for_serve "$pid" "$tmp/serve.out" "$tmp/serve.log")
log "fuzzing $addr"

# Two runs: every operation with generated values (names mostly unknown, so the
# routes' checks and 404s), then every operation on the real dataset `d` and its
# `images` tensor, so that the handlers' own work is fuzzed too. The second run leaves
# out the two deletes that would take `d` or `images` away from the operations after
# them (the first run covers them).
cat >"$tmp/pinned.toml" <<'TOML'
[parameters]
"path.name" = "d"
"path.tensor" = "images"
TOML
# One worker: hypothesis parses lambdas with `ast`, which fails now and then when two
# threads do it at once on some Python 3.11 releases.
fuzz() {
    "$venv/bin/schemathesis" "$@" spec/openapi.json \
        --url "$addr" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
        --seed "${SCHEMATHESIS_SEED:-7}" \
        --workers 1 \
        --request-timeout 30
}
status=0
fuzz run || status=$?
fuzz --config-file "$tmp/pinned.toml" run \
    --exclude-operation-id delete --exclude-operation-id delete_tensor ||
    status=$?
stop_server
if [ "$status" -ne 0 ]; then
    log "server log (last 40 lines):"
    tail -n 40 "$tmp/serve.log" >&2
fi
exit "$status"
