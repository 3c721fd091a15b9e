#!/usr/bin/env bash
# Ingest with TLS and authentication against plain text, side by side in one
# run: log records, then whole traces, as fast as the collector acknowledges
# them (periscope-loadgen over OTLP/gRPC, 4 clients), each mode on a fresh
# collector, the modes alternating for ROUNDS rounds so that drift on the
# machine hits both alike. Prints one line per run and the medians.
#
# Usage: benches/tls_auth.sh [SECONDS_PER_RUN] [ROUNDS]
# Needs release binaries (cargo build --release -p periscope-collector
# -p periscope-benches), openssl and jq. Everything binds 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
rounds=${2:-3}
target=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d -t periscope-tls.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# A private CA and a certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
out=$("$target/periscope" token new --name bench --tenant bench --scope write)
token=$(head -n1 <<<"$out")
tail -n +2 <<<"$out" >"$work/auth.toml"

run() { # mode signal -> one JSON summary line
    local mode=$1 signal=$2 data="$work/data-$RANDOM"
    local args=() scheme=http loadgen_args=(--tenant bench)
    if [ "$mode" = tls ]; then
        args=(--auth-file "$work/auth.toml" --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key")
        scheme=https
        loadgen_args+=(--token "$token" --tls-ca-file "$work/ca.crt")
    fi
    "$target/periscope" serve --data-dir "$data" --otlp-grpc-addr 127.0.0.1:0 \
        --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 "${args[@]}" \
        >"$work/out" 2>"$work/err" &
    local pid=$! line=
    for _ in $(seq 200); do
        line=$(head -n1 "$work/out" 2>/dev/null || true)
        [ -n "$line" ] && break
        sleep 0.05
    done
    local grpc http
    grpc=$(jq -r .otlp_grpc <<<"$line")
    http=$(jq -r .http <<<"$line")
    until curl -sfk -o /dev/null "$scheme://$http/readyz"; do sleep 0.1; done
    "$target/periscope-loadgen" --endpoint "$scheme://$grpc" --signal "$signal" \
        --duration "$secs" --clients 4 "${loadgen_args[@]}" 2>/dev/null | tail -n1
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$data"
}

results="$work/results"
: >"$results"
for ((r = 1; r <= rounds; r++)); do
    for signal in logs traces; do
        for mode in plain tls; do
            s=$(run "$mode" "$signal")
            jq -c --arg mode "$mode" --arg signal "$signal" \
                '{mode: $mode, signal: $signal, per_s: (.records_per_s | round), p50_ms: .latency_p50_ms, p99_ms: .latency_p99_ms, errors: .errors}' \
                <<<"$s" | tee -a "$results"
        done
    done
done
echo "medians over $rounds rounds of ${secs}s:"
jq -s -r 'group_by(.signal + .mode)[] | sort_by(.per_s) as $a | ($a | length) as $n
    | "\($a[0].signal) \($a[0].mode): \($a[($n / 2 | floor)].per_s) records/s, ack p50 \([$a[].p50_ms] | sort | .[($n / 2 | floor)]) ms, p99 \([$a[].p99_ms] | sort | .[($n / 2 | floor)]) ms"' "$results"
