#!/usr/bin/env bash
# End-to-end ingest benchmark: builds the release binaries, starts the
# collector on a fresh temporary data directory, runs periscope-loadgen with
# --verify against it, then reports the collector's peak RSS (VmHWM), its CPU
# time, and the data directory's size on disk against the OTLP bytes sent.
#
# Usage: benches/run_e2e.sh [DURATION_SECONDS] [extra periscope-loadgen args...]
#   e.g. benches/run_e2e.sh 30 --clients 4 --batch 500
#        benches/run_e2e.sh 60 --rate 20000 --compression zstd
#        SIGNAL=traces benches/run_e2e.sh 30
#        SIGNAL=metrics benches/run_e2e.sh 30 --batch 10000
#        SIGNAL=metrics REMOTE_WRITE=1 benches/run_e2e.sh 30 --batch 10000
# Environment: SKIP_BUILD=1 uses the binaries already built; KEEP=1 keeps the
# temporary directory (data, collector logs, loadgen output); SIGNAL=traces
# sends whole traces instead of logs (periscope-loadgen --signal), SIGNAL=metrics
# metric samples (OTLP, or Prometheus remote write with REMOTE_WRITE=1).
#
# The load generator and the collector share the machine: on a small one
# the loadgen's own CPU (reported) is taken from the collector.
set -euo pipefail

duration=${1:-30}
shift || true

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p periscope-collector -p periscope-benches --bins >&2
fi
target=${CARGO_TARGET_DIR:-$root/target}
periscope=$target/release/periscope
loadgen=$target/release/periscope-loadgen

work=$(mktemp -d -t periscope-e2e.XXXXXX)
data=$work/data
"$periscope" serve --data-dir "$data" \
    --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    >"$work/collector.out" 2>"$work/collector.err" &
pid=$!

cleanup() {
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

# The collector prints one JSON line with its bound addresses.
line=
for _ in $(seq 200); do
    line=$(head -n1 "$work/collector.out" 2>/dev/null || true)
    [ -n "$line" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "collector exited early:" >&2
        cat "$work/collector.err" >&2
        exit 1
    fi
    sleep 0.05
done
if [ -z "$line" ]; then
    echo "collector printed no address line within 10 s" >&2
    exit 1
fi
grpc=$(jq -r '.otlp_grpc' <<<"$line")
http=$(jq -r '.http' <<<"$line")
otlp_http=$(jq -r '.otlp_http' <<<"$line")
for _ in $(seq 200); do
    curl -fsS -o /dev/null "http://$http/readyz" 2>/dev/null && break
    sleep 0.05
done

# CPU seconds (user + system) of a process, from /proc/PID/stat.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}

echo "collector pid $pid on grpc $grpc, http $http, data dir $data" >&2
set +e
"$loadgen" --endpoint "http://$grpc" --query-url "http://$http" --duration "$duration" --verify \
    ${SIGNAL:+--signal "$SIGNAL"} ${REMOTE_WRITE:+--remote-write-url "http://$otlp_http/api/v1/write"} "$@" \
    >"$work/loadgen.json"
loadgen_rc=$?
set -e
summary=$(tail -n1 "$work/loadgen.json")
if [ -z "$summary" ]; then
    echo "periscope-loadgen failed (exit $loadgen_rc) without a result" >&2
    exit 1
fi

hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
collector_cpu=$(cpu_seconds "$pid")
live_bytes=$(du -sb "$data" | cut -f1)

# Graceful stop: final commit, then measure what stays on disk.
t0=$(date +%s.%N)
kill -TERM "$pid"
set +e
wait "$pid"
collector_rc=$?
set -e
stop_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
final_bytes=$(du -sb "$data" | cut -f1)
wal_bytes=$(du -sb "$data/wal" 2>/dev/null | cut -f1 || echo 0)
# The stores of every tenant: data/tenants/<tenant>/{logs,traces,metrics}
# (data format 2; format 1 kept tenants at the root).
index_bytes=$(find "$data" -mindepth 2 -maxdepth 3 -type d \( -name logs -o -name traces -o -name metrics \) -exec du -sbc {} + 2>/dev/null | awk '/total$/ { print $1 }')
index_bytes=${index_bytes:-0}

otlp_bytes=$(jq -r '.otlp_bytes' <<<"$summary")
records=$(jq -r '.acked_records' <<<"$summary")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "null" }'; }

jq -n \
    --argjson loadgen "$summary" \
    --argjson hwm_kb "$hwm_kb" --argjson rss_kb "$rss_kb" \
    --argjson collector_cpu "$collector_cpu" \
    --argjson live_bytes "$live_bytes" --argjson final_bytes "$final_bytes" \
    --argjson wal_bytes "$wal_bytes" --argjson index_bytes "$index_bytes" \
    --argjson stop_s "$stop_s" --argjson collector_rc "$collector_rc" \
    --argjson disk_ratio "$(ratio "$final_bytes" "$otlp_bytes")" \
    --argjson bytes_per_record "$(ratio "$final_bytes" "$records")" \
    --argjson store_bytes_per_record "$(ratio "$index_bytes" "$records")" \
    --argjson cpu_per_mrec "$(ratio "$collector_cpu" "$(awk -v r="$records" 'BEGIN { print r / 1e6 }')")" \
    '{loadgen: $loadgen,
      collector: {peak_rss_mib: ($hwm_kb / 1024), rss_at_end_mib: ($rss_kb / 1024), cpu_s: $collector_cpu,
                  cpu_s_per_million_records: $cpu_per_mrec, stop_s: $stop_s, exit_code: $collector_rc},
      disk: {bytes_before_stop: $live_bytes, bytes_after_stop: $final_bytes, wal_bytes_after_stop: $wal_bytes,
             index_bytes_after_stop: $index_bytes, bytes_per_record: $bytes_per_record,
             store_bytes_per_record: $store_bytes_per_record,
             ratio_to_otlp_bytes: $disk_ratio}}' >"$work/e2e.json"

jq -r '"records acknowledged: \(.loadgen.acked_records) in \(.loadgen.elapsed_s | . * 10 | round / 10) s = \(.loadgen.records_per_s | round) records/s, \(.loadgen.otlp_mb_per_s * 100 | round / 100) MB/s OTLP",
       "latency p50 \(.loadgen.latency_p50_ms) ms, p99 \(.loadgen.latency_p99_ms) ms; retries \(.loadgen.retries), errors \(.loadgen.errors)",
       "verify: \(.loadgen.verify)",
       "collector: peak RSS \(.collector.peak_rss_mib | round) MiB, CPU \(.collector.cpu_s) s (\(.collector.cpu_s_per_million_records) s per million records), stopped in \(.collector.stop_s | . * 100 | round / 100) s (exit \(.collector.exit_code)); loadgen CPU \(.loadgen.loadgen_cpu_s) s",
       "disk: \(.disk.bytes_after_stop) bytes after stop (index \(.disk.index_bytes_after_stop), wal \(.disk.wal_bytes_after_stop)), \(.disk.bytes_before_stop) before; \(.disk.bytes_per_record) bytes/record (\(.disk.store_bytes_per_record) in the stores, without the WAL); \(.disk.ratio_to_otlp_bytes) x the \(.loadgen.otlp_bytes) OTLP bytes"' \
    "$work/e2e.json" >&2
jq -c . "$work/e2e.json"

if [ "$loadgen_rc" -ne 0 ] || [ "$collector_rc" -ne 0 ]; then
    echo "FAILED: loadgen exit $loadgen_rc, collector exit $collector_rc" >&2
    exit 1
fi
