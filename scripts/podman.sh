#!/usr/bin/env bash
# Podman for the image test, on machines with no container registry in reach.
#
#   podman.sh setup   installs podman, runc and debootstrap (apt, only if missing),
#                     writes the containers.conf below and makes sure the base image
#                     exists; prints the base image's name
#   podman.sh env     prints `export CONTAINERS_CONF=...` for eval
#   podman.sh base    prints the base image's name (after setup)
#
# The base image is Debian bookworm made with `debootstrap --variant=minbase` plus the
# CA bundle (S3 over TLS needs it), because no image can be pulled. Its root filesystem
# is kept as a tarball in the cache shared with the venvs, keyed by what went into it,
# so a fresh clone only re-imports it (seconds) instead of bootstrapping (minutes).
#
# containers.conf: the runc runtime (crun fails here with "cgroups in hybrid mode not
# supported") and ulimits low enough that setrlimit is permitted in this sandbox. It
# lives in the cache and is named by CONTAINERS_CONF; nothing system-wide changes.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
VARIANT=minbase
INCLUDE=ca-certificates
PODMAN_DIR="$CACHE/podman"
CONF="$PODMAN_DIR/containers.conf"

arch() { dpkg --print-architecture 2>/dev/null || uname -m; }

# The first Debian mirror in apt's sources (deb822 or one-line format).
debian_mirror() {
    local f url
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        url=$(grep -vE '^[[:space:]]*#' "$f" | grep -oE 'https?://[^ ]*/debian/?( |$)' | head -n 1 | tr -d ' ') || true
        if [ -n "$url" ]; then
            printf '%s\n' "${url%/}"
            return
        fi
    done
    printf '%s\n' "http://deb.debian.org/debian"
}

# Everything that decides the rootfs's contents; a change gives a new cache key.
recipe() { printf 'debootstrap --variant=%s --include=%s %s %s\n' "$VARIANT" "$INCLUDE" "$SUITE" "$(arch)"; }
key() { recipe | sha256sum | cut -c1-12; }
base_name() { printf 'localhost/deeplake-rs-base:%s-%s\n' "$SUITE" "$(key)"; }

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing with apt: ${missing[*]}"
    local aptlog
    aptlog=$(mktemp)
    # Try the package lists at hand first; refresh them only if that fails.
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >"$aptlog" 2>&1; then
        if ! {
            "${sudo[@]}" apt-get update -q &&
                DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
        } >>"$aptlog" 2>&1; then
            tail -n 40 "$aptlog" >&2
            die "apt-get install ${missing[*]} failed"
        fi
    fi
    rm -f "$aptlog"
}

write_conf() {
    mkdir -p "$PODMAN_DIR"
    local tmp="$CONF.tmp.$$"
    cat >"$tmp" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
EOF
    mv "$tmp" "$CONF"
}

# The rootfs tarball, bootstrapped once per key. debootstrap needs root.
ensure_rootfs() {
    local k tarball
    k=$(key)
    tarball="$PODMAN_DIR/rootfs-$SUITE-$k.tar"
    if [ ! -f "$tarball" ]; then
        [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to build the base image"
        local mirror rootfs logfile="$PODMAN_DIR/debootstrap-$k.log"
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d "$PODMAN_DIR/rootfs.XXXXXX")
        log "bootstrapping Debian $SUITE ($VARIANT) from $mirror (first run only)"
        if ! debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$rootfs" "$mirror" >"$logfile" 2>&1; then
            tail -n 40 "$logfile" >&2
            rm -rf "$rootfs"
            die "debootstrap failed (full log: $logfile)"
        fi
        # Package lists and caches are not part of a base image.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . || die "packing the rootfs failed"
        rm -rf "$rootfs"
        mv "$tarball.tmp" "$tarball"
    fi
    printf '%s\n' "$tarball"
}

ensure_base() {
    local name tarball
    name=$(base_name)
    if ! podman image exists "$name"; then
        tarball=$(ensure_rootfs)
        log "importing $tarball as $name"
        podman import --quiet "$tarball" "$name" >/dev/null || die "podman import failed"
    fi
    printf '%s\n' "$name"
}

cmd=${1:-}
case $cmd in
setup)
    install_tools
    write_conf
    export CONTAINERS_CONF="$CONF"
    mkdir -p "$PODMAN_DIR"
    (
        # Two callers at once would bootstrap twice; the second waits instead.
        if command -v flock >/dev/null; then flock 9; fi
        ensure_base
    ) 9>"$PODMAN_DIR/setup.lock"
    ;;
env)
    [ -f "$CONF" ] || die "no $CONF: run scripts/podman.sh setup first"
    printf 'export CONTAINERS_CONF=%q\n' "$CONF"
    ;;
base)
    base_name
    ;;
*)
    die "usage: podman.sh setup|env|base"
    ;;
esac
