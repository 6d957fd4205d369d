#!/usr/bin/env bash
# The README's first command: builds the CLI and runs the main job on the embedded
# default (a local folder): a sample dataset is written, then summarised and dumped.
# Usage: scripts/demo.sh [DATASET_DIR] [ROWS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-./demo-dataset}
rows=${2:-2000}
cargo build --release --locked --bin deeplake
./target/release/deeplake demo "$out" --rows "$rows"
