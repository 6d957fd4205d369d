#!/usr/bin/env bash
# The README's first command: builds the CLI, makes sure a local storage root (default
# ./deeplake-data) holds a sample dataset `demo` (written by `deeplake demo` when
# missing: synthetic images with labels, boxes and captions), then serves the root
# with `deeplake serve` on loopback until Ctrl-C, which stops it gracefully.
# Usage: scripts/demo.sh [ROOT] [ROWS]    (DEEPLAKE_BIND sets the address, default
# 127.0.0.1:7400)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=${1:-./deeplake-data}
rows=${2:-2000}
bind=${DEEPLAKE_BIND:-127.0.0.1:7400}
cargo build --release --locked -p deeplake-daemon --bin deeplake
bin=./target/release/deeplake
# A dataset's root holds these two files once its first write completed.
if [ ! -f "$root/demo/dataset_meta.json" ] || [ ! -f "$root/demo/version_control_info.json" ]; then
    mkdir -p "$root"
    "$bin" demo "$root/demo" --rows "$rows"
fi
base="http://$bind"
cat <<MSG

API:             $base/datasets
API document:    $base/openapi.json
In a browser:    $base/datasets/demo  (summary)
                 $base/datasets/demo/tensors/images/samples/0?format=raw  (the first image)
Query:           curl -s -X POST $base/datasets/demo/query -H 'content-type: application/json' \\
                     -d '{"query": "SELECT * WHERE labels == 0", "limit": 3}'
Ctrl-C stops the server.

MSG
# exec: Ctrl-C's SIGINT reaches the server itself, which finishes what is in flight.
exec "$bin" serve --root "$root" --bind "$bind"
