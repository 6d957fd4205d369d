#!/usr/bin/env bash
# The project's full check, as CI runs it: installs the test tools (scripts/setup.sh),
# starts the local S3 server, then runs formatting, lints, the fuzz targets (a bounded
# run each, scripts/fuzz.sh), the supply-chain check (cargo deny), the
# dependency-direction rule, every Rust test, schemathesis against the HTTP API, the
# interop suite against deeplake 3.9.52 / 4.7.4, the Airbyte connector with a real
# source, a 60 s soak of every binary through a fault-injecting S3 proxy
# (scripts/soak.sh), the Python client, the user docs' code blocks, the web visualizer
# in chromium, the two container images with compose.yaml, and packaging (cargo
# install, the Python client's wheel and sdist).
# Cargo runs with --locked: the lock file is the build's, never updated here.
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
# A one-shot build gains nothing from incremental state, which doubles the target's size.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

section() { printf '\n==== %s ====\n' "$*"; }

failed=()
# run_step NAME CMD...: runs CMD, records NAME if it fails.
run_step() {
    local name=$1
    shift
    section "$name"
    local start=$SECONDS
    if "$@"; then
        printf -- '---- %s: ok (%ss)\n' "$name" $((SECONDS - start))
    else
        printf -- '---- %s: FAILED (%ss)\n' "$name" $((SECONDS - start))
        failed+=("$name")
    fi
}

section "setup"
bash scripts/setup.sh
DL3_VENV=$(dl3_venv)
DL4_VENV=$(dl4_venv)
FAKER_VENV=$(faker_venv)
PROTO_VENV=$(proto_venv)
CLIENT_VENV=$(client_venv)
AWSCLI_VENV=$(awscli_venv)

section "S3 server"
if bash scripts/s3.sh status; then
    echo "using the S3 server already started by scripts/s3.sh"
else
    trap 'bash scripts/s3.sh stop' EXIT
    bash scripts/s3.sh start
fi
eval "$(bash scripts/s3.sh env)"
echo "S3 endpoint $AWS_ENDPOINT, bucket $DEEPLAKE_TEST_S3_BUCKET"

export DEEPLAKE_DL3_PYTHON="$DL3_VENV/bin/python"
export DEEPLAKE_DL4_PYTHON="$DL4_VENV/bin/python"
# The connector tests check every output line with shared/airbyte/validate_messages.py.
export DEEPLAKE_PROTO_PYTHON="$PROTO_VENV/bin/python"

# `core` must not depend on the protocol/HTTP/CLI crates of the binaries.
check_dependency_direction() {
    local tree
    tree=$(cargo tree -p deeplake-core -e normal --prefix none -f '{p}') || return 1
    if grep -E '^(axum|clap|jsonschema) v' <<<"$tree"; then
        echo "deeplake-core must not depend on the crates listed above"
        return 1
    fi
}

# Licenses, bans and sources of every dependency (deny.toml), from the lock file and
# the local registry cache only. Advisories are left out: they need the advisory
# database, fetched from the network.
check_supply_chain() {
    local bin
    bin=$(cargo_deny_bin) || return 1
    "$bin/cargo-deny" --offline --locked check --hide-inclusion-graph licenses bans sources
}

run_interop() {
    local target
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
    cargo build --locked --workspace --bins || return 1
    DEEPLAKE_BIN=${DEEPLAKE_BIN:-$target/debug/deeplake} \
        DEEPLAKE_FIXTURE_WRITER=${DEEPLAKE_FIXTURE_WRITER:-$target/debug/deeplake-fixture-writer} \
        "$DL3_VENV/bin/python" -m pytest -p no:cacheprovider -q integration-tests/interop
}

# A real Airbyte source (source-faker) piped into the connector; deeplake 3.9.52 reads
# the datasets back.
run_airbyte_test() {
    local target
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
    # The same build as the interop step (one feature set, nothing rebuilt).
    cargo build --locked --workspace --bins || return 1
    DEEPLAKE_CONNECTOR_BIN=${DEEPLAKE_CONNECTOR_BIN:-$target/debug/destination-deeplake} \
        DEEPLAKE_FAKER_BIN="$FAKER_VENV/bin/source-faker" \
        "$DL3_VENV/bin/python" -m pytest -p no:cacheprovider -q integration-tests/airbyte
}

# The Python client (numpy, pyarrow, torch) against real daemons on 127.0.0.1.
run_client_test() {
    local target
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
    cargo build --locked --workspace --bins || return 1
    DEEPLAKE_BIN=${DEEPLAKE_BIN:-$target/debug/deeplake} \
        "$CLIENT_VENV/bin/python" -m pytest -p no:cacheprovider -q client/python/tests || return 1
    local ray_venv
    ray_venv=$(client_ray_venv) || return 1
    DEEPLAKE_BIN=${DEEPLAKE_BIN:-$target/debug/deeplake} \
        "$ray_venv/bin/python" -m pytest -p no:cacheprovider -q client/python/tests_ray
}

# The user docs (integration-tests/docs): every code block of the pages it lists runs
# (the S3 page against the test server exported above, the Airbyte page with source-faker),
# every other block is marked, and the documented settings, routes and flags exist.
run_docs_test() {
    local target
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
    cargo build --locked --workspace --bins || return 1
    DEEPLAKE_BIN=${DEEPLAKE_BIN:-$target/debug/deeplake} \
        DEEPLAKE_CONNECTOR_BIN=${DEEPLAKE_CONNECTOR_BIN:-$target/debug/destination-deeplake} \
        DEEPLAKE_FAKER_BIN="$FAKER_VENV/bin/source-faker" \
        DEEPLAKE_AWS_BIN="$AWSCLI_VENV/bin/aws" \
        "$CLIENT_VENV/bin/python" -m pytest -p no:cacheprovider -q integration-tests/docs
}

# The web visualizer in chromium (scripts/web-test.sh), with the build of the steps
# above.
run_web_test() {
    cargo build --locked --workspace --bins || return 1
    bash scripts/web-test.sh
}

# The images: hadolint, then Podman builds of the connector and the daemon, spec/check/
# write inside the connector's, compose.yaml checked against them, and both run against
# the test S3 server (integration-tests/image).
run_image_test() {
    local venv
    venv=$(hadolint_venv) || return 1
    "$venv/bin/python" -m pytest -p no:cacheprovider -q integration-tests/image
}

# `cargo install --path` of both binaries (debug, offline, into a scratch root), the
# Python client's sdist and wheel installed into a fresh venv, one version everywhere.
run_package_test() {
    local venv
    venv=$(package_venv) || return 1
    "$venv/bin/python" -m pytest -p no:cacheprovider -q -rA integration-tests/package
}

run_step "cargo fmt" cargo fmt --all -- --check
run_step "cargo clippy" cargo clippy --locked --workspace --all-targets -- -D warnings
run_step "fuzzing (cargo-fuzz)" bash scripts/fuzz.sh
run_step "supply chain (cargo deny)" check_supply_chain
run_step "dependency direction" check_dependency_direction
run_step "cargo test" cargo test --locked --workspace
run_step "API fuzzing (schemathesis)" bash scripts/schemathesis.sh
run_step "interop (deeplake 3.9.52 / 4.7.4)" run_interop
run_step "airbyte (source-faker | destination-deeplake)" run_airbyte_test
run_step "soak (60 s)" bash scripts/soak.sh 60
run_step "python client (numpy, torch)" run_client_test
run_step "user docs" run_docs_test
run_step "web visualizer (chromium)" run_web_test
run_step "image (hadolint, podman)" run_image_test
run_step "packaging (cargo install, wheel, sdist)" run_package_test

section "summary"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all checks passed"
