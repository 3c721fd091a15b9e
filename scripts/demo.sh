#!/usr/bin/env bash
# Builds Periscope and starts the collector with embedded storage in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p periscope-collector
exec ./target/release/periscope serve --data-dir "${PERISCOPE_DATA_DIR:-./data}" "$@"
