#!/usr/bin/env bash
# Builds every cargo-fuzz target of fuzz/ and runs each for a bounded time, starting
# from a scratch copy of its committed corpus (fuzz/corpus/<target>), so a run never
# grows the committed corpus. A crash, a panic, a timeout or a memory blow-up fails
# the run and prints the reproducer's path and the command that replays it.
#
#   DEEPLAKE_FUZZ_SECONDS   seconds per target (default 20: five targets take about
#                           2 minutes with a built fuzz tree; the first build takes
#                           longer, then only what changed is rebuilt)
#   DEEPLAKE_FUZZ_RSS_MB    memory limit of a fuzzer process (default 2048)
#   DEEPLAKE_FUZZ_TIMEOUT   seconds one input may take (default 10)
#   DEEPLAKE_FUZZ_TARGETS   space-separated targets to run (default: all)
#
#   bash scripts/fuzz.sh build   only builds the targets (setup does this in the
#                                background while the venvs download)
#
# Needs the nightly toolchain (rustup) for libFuzzer's instrumentation; cargo-fuzz is
# built once into the cache outside the clone (scripts/lib.sh). The build tree is kept
# there too, so a fresh clone does not rebuild every dependency.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
export CARGO_INCREMENTAL=0

seconds=${DEEPLAKE_FUZZ_SECONDS:-20}
rss_mb=${DEEPLAKE_FUZZ_RSS_MB:-2048}
timeout=${DEEPLAKE_FUZZ_TIMEOUT:-10}

command -v rustup >/dev/null || die "rustup not found: the fuzz targets need the nightly toolchain (install rustup, then: rustup toolchain install nightly)"
cargo +nightly --version >/dev/null 2>&1 ||
    die "the nightly toolchain is missing: rustup toolchain install nightly"
fuzz_bin=$(cargo_fuzz_bin)
export PATH="$fuzz_bin:$PATH"

# The fuzz crate is a workspace of its own: its lock file must be current as well.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null ||
    die "fuzz/Cargo.lock is out of date: run cargo metadata --manifest-path fuzz/Cargo.toml and commit it"

target_dir="$CACHE/fuzz-target"
# Our crates forbid unsafe code, so AddressSanitizer would mostly slow the build and
# the runs; debug assertions and overflow checks stay on (cargo-fuzz's default).
build_flags=(--sanitizer none --codegen-units 16 --target-dir "$target_dir")

start=$SECONDS
log "building the fuzz targets (nightly, into $target_dir)"
cargo +nightly fuzz build "${build_flags[@]}" || die "building the fuzz targets failed"
log "built in $((SECONDS - start)) s"
if [ "${1:-}" = build ]; then
    exit 0
fi

if [ -n "${DEEPLAKE_FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$DEEPLAKE_FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
artifacts="$REPO_ROOT/fuzz/artifacts"
failed=()
for t in "${targets[@]}"; do
    corpus="$scratch/corpus/$t"
    mkdir -p "$corpus" "$artifacts/$t"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    else
        log "warning: fuzz target $t has no committed corpus (fuzz/corpus/$t)"
    fi
    runlog="$scratch/$t.log"
    log "fuzzing $t for $seconds s ($(find "$corpus" -type f | wc -l) seed inputs)"
    t0=$SECONDS
    if cargo +nightly fuzz run "${build_flags[@]}" "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout" \
        -artifact_prefix="$artifacts/$t/" -print_final_stats=1 >"$runlog" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$runlog" | tail -n 1)
        cov=$(grep -o 'cov: [0-9]*' "$runlog" | tail -n 1 || true)
        log "  $t: ok, ${runs:-?} inputs in $((SECONDS - t0)) s (${cov:-cov: ?})"
    else
        tail -n 60 "$runlog" >&2
        repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$runlog" | tail -n 1)
        log "  $t: FAILED after $((SECONDS - t0)) s"
        if [ -n "$repro" ]; then
            log "  reproducer: $repro"
            log "  replay it:  cargo +nightly fuzz run ${build_flags[*]} $t $repro"
        fi
        failed+=("$t")
    fi
done
log "fuzzing took $((SECONDS - start)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
    die "fuzz targets failed: ${failed[*]}"
fi
