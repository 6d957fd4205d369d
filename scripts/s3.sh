#!/usr/bin/env bash
# A local S3 server for tests: SeaweedFS (`weed mini`) on 127.0.0.1 with enforced
# SigV4 credentials and one bucket.
#
#   scripts/s3.sh start    start it (no-op if this script already runs it), wait until it serves
#   scripts/s3.sh stop     stop the server this script started, wait until its ports are free
#   scripts/s3.sh status   exit 0 if the server this script started is running
#   scripts/s3.sh env      print the `export AWS_...` lines a test needs: eval "$(scripts/s3.sh env)"
#
# DEEPLAKE_TEST_S3_PORT picks the S3 port (default 8333). SeaweedFS also listens on
# fixed ports (master 9333/19333, volume 9340/19340, filer 8888/18888, admin 23646/33646,
# S3 gRPC = S3 port + 10000), so only one such server can run per machine.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${DEEPLAKE_TEST_S3_PORT:-8333}
BUCKET="test"
ACCESS_KEY=deeplake-test-key
SECRET_KEY=deeplake-test-secret-0123456789
REGION=us-east-1
STATE="$CACHE/s3-$PORT"
PIDFILE="$STATE/weed.pid"
DIRFILE="$STATE/data_dir"
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30

# Ports `weed mini` opens with the flags used below.
PORTS=("$PORT" $((PORT + 10000)) 9333 19333 9340 19340 8888 18888 23646 33646)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid this script started, if that process still runs `weed`.
our_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'weed mini' || return 1
    printf '%s\n' "$pid"
}

# 200 once the server checks our signature and the bucket exists; 000 while nothing listens.
probe() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        "http://127.0.0.1:$PORT/$BUCKET?list-type=2&max-keys=1" || true
}

cleanup_state() {
    if [ -f "$DIRFILE" ]; then
        local dir
        dir=$(cat "$DIRFILE")
        # Only remove what this script created.
        case "$dir" in */deeplake-s3.*) rm -rf "$dir" ;; esac
    fi
    rm -f "$PIDFILE" "$DIRFILE"
}

cmd_start() {
    if pid=$(our_pid); then
        [ "$(probe)" = 200 ] || die "the S3 server started earlier (pid $pid) does not answer; run: $0 stop"
        return 0
    fi
    cleanup_state
    local busy=()
    for p in "${PORTS[@]}"; do
        if port_open "$p"; then busy+=("$p"); fi
    done
    if [ ${#busy[@]} -gt 0 ]; then
        log "error: ports needed by the test S3 server are already in use: ${busy[*]}"
        command -v ss >/dev/null && ss -ltnp 2>/dev/null | grep -E ":($(
            IFS='|'
            echo "${busy[*]}"
        ))\b" >&2 || true
        die "another program holds these ports; stop it (if only the S3 port is taken, DEEPLAKE_TEST_S3_PORT can move it)"
    fi

    local venv dir
    venv=$(s3_venv)
    mkdir -p "$STATE"
    dir=$(mktemp -d "${TMPDIR:-/tmp}/deeplake-s3.XXXXXX")
    printf '%s\n' "$dir" >"$DIRFILE"
    local extra=()
    # Keep the S3 unix socket inside the data dir (removed on stop) when the path
    # fits a socket address; otherwise SeaweedFS puts it in /tmp.
    if [ ${#dir} -lt 90 ]; then extra+=(-s3.localSocket="$dir/s3.sock"); fi
    # The environment credentials make SeaweedFS create this user and reject
    # unsigned or wrongly signed requests, so tests exercise real SigV4.
    AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
        nohup "$venv/bin/weed" mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$PORT" -bucket="$BUCKET" -webdav=false -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false "${extra[@]}" \
        </dev/null >"$dir/weed.log" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    local deadline=$((SECONDS + START_TIMEOUT_S))
    while [ "$(probe)" != 200 ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$dir/weed.log" >&2
            cleanup_state
            die "the S3 server exited during start-up (log above)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 40 "$dir/weed.log" >&2
            cmd_stop
            die "the S3 server did not answer within ${START_TIMEOUT_S}s (log above)"
        fi
        sleep 0.2
    done
}

cmd_stop() {
    local pid
    if ! pid=$(our_pid); then
        cleanup_state
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            log "warning: S3 server (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while port_open "$PORT"; do
        [ $SECONDS -lt $deadline ] || die "port $PORT is still in use ${STOP_TIMEOUT_S}s after stopping the S3 server"
        sleep 0.2
    done
    cleanup_state
}

cmd_env() {
    printf 'export %s=%q\n' \
        AWS_ENDPOINT "http://127.0.0.1:$PORT" \
        AWS_ALLOW_HTTP true \
        AWS_REGION "$REGION" \
        AWS_ACCESS_KEY_ID "$ACCESS_KEY" \
        AWS_SECRET_ACCESS_KEY "$SECRET_KEY" \
        AWS_COPY_IF_NOT_EXISTS multipart \
        DEEPLAKE_TEST_S3_BUCKET "$BUCKET"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) our_pid >/dev/null ;;
env) cmd_env ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
