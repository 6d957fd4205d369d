# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
# CACHE holds everything the test scripts install (Python venvs) or run (the S3
# server's state), outside the repository so that a `git clean` keeps it.

# Errors inside $(...) must stop the caller too.
shopt -s inherit_errexit

CACHE=${DEEPLAKE_RS_CACHE:-${HOME:-/tmp}/.cache/deeplake-rs}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# wait_for_serve PID OUT ERR
#
# Prints the address that `deeplake serve` (process PID, stdout in OUT, stderr in ERR)
# announces; fails with its log if it exits first, or if it names none within 10 s.
wait_for_serve() {
    local pid=$1 out=$2 err=$3 addr=
    for _ in $(seq 1 100); do
        addr=$(sed -n 's/^serving .* at \(http:[^ ]*\)$/\1/p' "$out")
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || {
            cat "$err" >&2
            die "deeplake serve exited"
        }
        sleep 0.1
    done
    [ -n "$addr" ] || die "deeplake serve printed no address"
    printf '%s\n' "$addr"
}

# ensure_venv NAME REQFILE
#
# Prints the path of a venv holding the packages of REQFILE, creating it first if
# needed. The path depends on the file's contents and the Python version, so an
# edited requirements file gets a fresh venv instead of a half-upgraded one. The
# marker file is written last: a venv without it (an interrupted install) is
# thrown away and built again.
ensure_venv() {
    local name=$1 reqfile=$2
    [ -f "$reqfile" ] || die "requirements file not found: $reqfile"
    command -v python3 >/dev/null || die "python3 is required"
    local pyver hash venv
    pyver=$(python3 -c 'import platform; print(platform.python_implementation(), platform.python_version())') ||
        die "python3 does not run"
    hash=$({
        cat "$reqfile"
        printf '%s\n' "$pyver"
    } | sha256sum | cut -c1-12) || die "sha256sum failed"
    venv="$CACHE/venv/$name-$hash"
    if [ ! -f "$venv/.complete" ]; then
        mkdir -p "$CACHE/venv"
        (
            # One installer at a time per venv; a second caller waits, then finds it done.
            if command -v flock >/dev/null; then flock 9; fi
            if [ ! -f "$venv/.complete" ]; then
                log "installing venv $name into $venv (first run only)"
                rm -rf "$venv"
                local logfile="$CACHE/venv/$name-$hash.log"
                if ! {
                    python3 -m venv "$venv" &&
                        "$venv/bin/python" -m pip install --disable-pip-version-check -r "$reqfile"
                } >"$logfile" 2>&1; then
                    tail -n 40 "$logfile" >&2
                    die "installing venv $name failed (full log: $logfile)"
                fi
                touch "$venv/.complete"
            fi
        ) 9>"$CACHE/venv/$name-$hash.lock" || exit 1
    fi
    printf '%s\n' "$venv"
}

# Paths of the three venvs the tests use.
dl3_venv() { ensure_venv deeplake3 "$REPO_ROOT/scripts/requirements/deeplake3.txt"; }
dl4_venv() { ensure_venv deeplake4 "$REPO_ROOT/scripts/requirements/deeplake4.txt"; }
s3_venv() { ensure_venv s3 "$REPO_ROOT/scripts/requirements/s3.txt"; }
# airbyte-source-faker (a real Airbyte source) and the protocol models + jsonschema
# that shared/airbyte/validate_messages.py needs, for the connector tests.
faker_venv() { ensure_venv airbyte-faker "$REPO_ROOT/scripts/requirements/airbyte-faker.txt"; }
proto_venv() { ensure_venv airbyte-proto "$REPO_ROOT/scripts/requirements/airbyte-proto.txt"; }
# The AWS CLI, which docs/operations.md uses to copy a dataset prefix (backups).
awscli_venv() { ensure_venv awscli "$REPO_ROOT/scripts/requirements/awscli.txt"; }
# schemathesis, which fuzzes the HTTP API from spec/openapi.json (scripts/schemathesis.sh).
schemathesis_venv() { ensure_venv schemathesis "$REPO_ROOT/scripts/requirements/schemathesis.txt"; }
# bench_data N SEED WORK DL3_VENV
#
# Prints the folder of bench/gen_data.py's data for N rows and SEED under WORK, making
# it first if needed (cached by N, the seed and the generator's code; Pillow and numpy
# come from the deeplake 3 venv, whose requirements pin them through deeplake 3.9.52).
bench_data() {
    local n=$1 seed=$2 work=$3 dl3=$4 gen_hash data
    gen_hash=$(sha256sum "$REPO_ROOT/bench/gen_data.py" | cut -c1-10)
    data=$work/data/n$n-s$seed-$gen_hash
    if [ ! -f "$data/manifest.json" ]; then
        log "generating $n rows into $data"
        rm -rf "$data" "$data.tmp"
        mkdir -p "$work/data"
        "$dl3/bin/python" "$REPO_ROOT/bench/gen_data.py" --n "$n" --seed "$seed" --out "$data.tmp" >/dev/null
        mv "$data.tmp" "$data"
    fi
    printf '%s\n' "$data"
}

# The Python client's tests (numpy, pyarrow, pytest, torch).
client_venv() { ensure_venv client "$REPO_ROOT/scripts/requirements/client.txt"; }
# The transform bench's Python side of ours, on the Pillow and numpy of deeplake 3.9.52.
transform_bench_venv() { ensure_venv transform-bench "$REPO_ROOT/scripts/requirements/transform-bench.txt"; }
# Ray (and the client's needs) for the transform scheduler="ray" tests.
client_ray_venv() { ensure_venv client-ray "$REPO_ROOT/scripts/requirements/client-ray.txt"; }
# hadolint, pytest and PyYAML for the image test (integration-tests/image).
hadolint_venv() { ensure_venv hadolint "$REPO_ROOT/scripts/requirements/hadolint.txt"; }
# The Python build frontend (build, setuptools) and the client's runtime needs, for the
# packaging test (integration-tests/package).
package_venv() { ensure_venv package "$REPO_ROOT/scripts/requirements/package.txt"; }

# ensure_wrk: makes sure the HTTP load generator `wrk` is on PATH (the daemon bench),
# installing Debian's package when it is missing. Idempotent: nothing is done when it
# is there.
ensure_wrk() {
    command -v wrk >/dev/null && return 0
    command -v apt-get >/dev/null || die "wrk is missing and apt-get is not available: install wrk"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing wrk (apt)"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >&2 || die "installing wrk failed"
    command -v wrk >/dev/null || die "wrk is still missing after installing it"
}

# web_modules
#
# Prints the node_modules folder holding the browser tests' npm packages
# (integration-tests/web: playwright-core, pinned by its package-lock.json), installing
# them first if needed. Like the venvs: the folder is keyed by a hash of the lock file,
# built under a lock, and marked complete last.
web_modules() {
    local web="$REPO_ROOT/integration-tests/web" hash dir
    command -v npm >/dev/null || die "npm is required for the browser tests"
    hash=$(cat "$web/package.json" "$web/package-lock.json" | sha256sum | cut -c1-12) || die "sha256sum failed"
    dir="$CACHE/npm/web-$hash"
    if [ ! -f "$dir/.complete" ]; then
        mkdir -p "$CACHE/npm"
        (
            if command -v flock >/dev/null; then flock 9; fi
            if [ ! -f "$dir/.complete" ]; then
                log "installing the browser tests' npm packages into $dir (first run only)"
                rm -rf "$dir"
                mkdir -p "$dir"
                cp "$web/package.json" "$web/package-lock.json" "$dir/"
                if ! (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts) >"$dir.log" 2>&1; then
                    tail -n 40 "$dir.log" >&2
                    die "npm ci failed (full log: $dir.log)"
                fi
                touch "$dir/.complete"
            fi
        ) 9>"$CACHE/npm/web-$hash.lock" || exit 1
    fi
    printf '%s\n' "$dir/node_modules"
}

# ensure_chromium: makes sure Debian's chromium is at /usr/bin/chromium (the browser
# tests drive it), installing the package when it is missing. Idempotent.
ensure_chromium() {
    [ -x /usr/bin/chromium ] && return 0
    command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available: install chromium"
    local sudo=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install chromium"
        sudo=sudo
    fi
    log "installing chromium (apt, first run only)"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2 || die "installing chromium failed"
    [ -x /usr/bin/chromium ] || die "chromium is still missing after installing it"
}

# ensure_cargo_tool CRATE VERSION
#
# Prints the bin folder of a cached `cargo install` of CRATE at VERSION (cargo-fuzz,
# cargo-deny), building it first if needed. Like the venvs: kept under $CACHE keyed by
# name, version and rustc version, built under a lock, marked complete last, so an
# interrupted build is redone rather than half-used. A binary of that exact version
# already on PATH is used instead.
ensure_cargo_tool() {
    local crate=$1 version=$2 rustc_ver root
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
    # The same version already installed (e.g. by hand) serves as well.
    local have
    if have=$(command -v "$crate") && [ "$("$have" --version 2>/dev/null)" = "$crate $version" ]; then
        dirname "$have"
        return 0
    fi
    rustc_ver=$(rustc --version | cut -d' ' -f2) || die "rustc does not run"
    root="$CACHE/cargo-tools/$crate-$version-rustc$rustc_ver"
    if [ ! -f "$root/.complete" ]; then
        mkdir -p "$CACHE/cargo-tools"
        (
            if command -v flock >/dev/null; then flock 9; fi
            if [ ! -f "$root/.complete" ]; then
                log "building $crate $version into $root (first run only, a few minutes)"
                rm -rf "$root"
                local logfile="$root.log"
                if ! CARGO_INCREMENTAL=0 cargo install --locked "$crate" --version "$version" \
                    --root "$root" >"$logfile" 2>&1; then
                    tail -n 40 "$logfile" >&2
                    die "cargo install $crate $version failed (full log: $logfile)"
                fi
                touch "$root/.complete"
            fi
        ) 9>"$CACHE/cargo-tools/$crate-$version.lock" || exit 1
    fi
    printf '%s\n' "$root/bin"
}

# The fuzzer driver (scripts/fuzz.sh) and the supply-chain check (scripts/test.sh).
cargo_fuzz_bin() { ensure_cargo_tool cargo-fuzz 0.13.2; }
cargo_deny_bin() { ensure_cargo_tool cargo-deny 0.20.2; }
