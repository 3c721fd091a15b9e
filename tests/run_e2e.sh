#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e) against the real `periscope` binary.
# Creates the venv (.venv at the repository root) if missing, installs the
# requirements, builds the binary if it is missing, and propagates pytest's
# exit code (with "no tests collected" counted as a failure).
# Extra arguments go to pytest, e.g.: tests/run_e2e.sh -k tenants -x
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt

target_dir="${CARGO_TARGET_DIR:-$root/target}"
export PERISCOPE_BIN="${PERISCOPE_BIN:-$target_dir/debug/periscope}"
export PERISCOPE_AGENT_BIN="${PERISCOPE_AGENT_BIN:-$target_dir/debug/periscope-agent}"
if [ ! -x "$PERISCOPE_BIN" ]; then
    cargo build -p periscope-collector
fi

set +e
"$venv/bin/python" -m pytest -q tests/e2e "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "run_e2e.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
