#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the web UI's unit
# tests (Vitest), the end-to-end tests that drive the real binaries with the
# OpenTelemetry Python SDK, then the browser tests (Playwright driving
# Debian's Chromium against `periscope demo`, then signing in to `periscope
# serve` with an auth file and TLS).
set -euo pipefail
cd "$(dirname "$0")/.."
# The UI is built first so that the binary embeds it.
(cd query-ui/web && npm ci --no-audit --no-fund && npm run build && npm test)
# One build for everything: building the binaries alone would resolve
# dependency features without the dev-dependencies and compile most of the
# dependency graph a second time for the tests.
cargo build --workspace --bins --tests
cargo nextest run --workspace --no-fail-fast
bash tests/run_e2e.sh
SKIP_BUILD=1 bash tests/browser/run.sh
