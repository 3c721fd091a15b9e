#!/usr/bin/env bash
# Builds Periscope (the web UI, the collector and the agent) and starts
# `periscope demo`: the collector with embedded storage in ./data plus a
# built-in shop that sends traces, logs and metrics; it prints the UI URL.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd query-ui/web && npm ci --no-audit --no-fund && npm run build)
cargo build --release -p periscope-collector -p periscope-agent
exec ./target/release/periscope demo --data-dir "${PERISCOPE_DATA_DIR:-./data}" "$@"
