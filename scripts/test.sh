#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the end-to-end
# tests that drive the real binary with the OpenTelemetry Python SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p periscope-collector
cargo nextest run --workspace --no-fail-fast
bash tests/run_e2e.sh
