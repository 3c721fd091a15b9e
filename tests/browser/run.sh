#!/usr/bin/env bash
# Browser end-to-end test of the web UI: builds the UI and the binary, starts
# `periscope demo` (or `periscope serve` while the demo command does not
# exist) on free ports with a temporary data dir, and drives Debian's
# Chromium through playwright-core (tests/browser/ui.spec.mjs). Then the
# sign-in test (tests/browser/signin.spec.mjs), which starts its own
# `periscope serve` with an auth file and TLS.
#
#   tests/browser/run.sh            # build, run, check
#   SKIP_BUILD=1 tests/browser/run.sh
#
# Needs: node + npm, cargo, openssl, and `apt-get install -y chromium`.
# Screenshots: tests/browser/screenshots/ (gitignored).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
bin="${PERISCOPE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/periscope}"

if [[ ! -x "$chromium" ]]; then
  echo "error: no Chromium at $chromium: install it with 'apt-get install -y chromium' (or set CHROMIUM)" >&2
  exit 2
fi

if [[ "${SKIP_BUILD:-}" != "1" ]]; then
  # The lock file lists every platform's optional packages, so `npm ci`
  # installs exactly it; regenerate it from package.json alone if not.
  (cd "$root/query-ui/web" && npm ci --no-audit --no-fund && npm run build)
  (cd "$root" && cargo build -p periscope-collector)
fi
(cd "$here" && npm ci --no-audit --no-fund >/dev/null)

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
grpc_port="$(free_port)"
otlp_port="$(free_port)"
http_port="$(free_port)"

data="$(mktemp -d)"
log="$data/periscope.log"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  if [[ "${KEEP_DATA:-}" == "1" ]]; then echo "data and log kept in $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT

# `periscope demo` when the binary has it; `serve` otherwise (the UI test
# sends its own records either way; the demo's services are checked only
# with the demo).
cmd=serve
demo=0
if "$bin" demo --help >/dev/null 2>&1; then
  cmd=demo
  demo=1
fi
extra=()
# Short trace idle/flush times when the command takes them, so traces reach
# search and the service map within seconds.
if "$bin" "$cmd" --help 2>/dev/null | grep -q -- "--trace-idle"; then
  extra+=(--trace-idle 500ms --trace-flush-interval 1s)
fi
echo "starting: periscope $cmd on 127.0.0.1:$http_port (otlp http :$otlp_port, grpc :$grpc_port)"
"$bin" "$cmd" --data-dir "$data/data" \
  --otlp-grpc-addr "127.0.0.1:$grpc_port" \
  --otlp-http-addr "127.0.0.1:$otlp_port" \
  --http-addr "127.0.0.1:$http_port" \
  "${extra[@]}" >"$log" 2>&1 &
pid=$!

for _ in $(seq 600); do
  if curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: periscope exited during startup; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null || { echo "error: /readyz did not answer within 60 s" >&2; cat "$log" >&2; exit 1; }

status=0
BASE_URL="http://127.0.0.1:$http_port" OTLP_HTTP="http://127.0.0.1:$otlp_port" DEMO="$demo" CHROMIUM="$chromium" \
  node "$here/ui.spec.mjs" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- last lines of the periscope log ---" >&2
  tail -n 40 "$log" >&2
fi

echo "sign-in: periscope serve with an auth file and TLS"
PERISCOPE_BIN="$bin" CHROMIUM="$chromium" node "$here/signin.spec.mjs" || status=1
exit $status
