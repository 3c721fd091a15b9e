#!/usr/bin/env bash
# Soak run: the collector under a steady load of all three signals and a
# steady query load for a long time, sampling its resident memory, open file
# descriptors and threads once a minute. Resources should be flat after
# warm-up: a rise that keeps going is a leak (memory, files or threads).
#
# Usage: benches/soak.sh [SECONDS] [LOG_RATE] [SPAN_RATE] [METRIC_SERIES]
#   SECONDS        how long to run (default 3600)
#   LOG_RATE       log records per second (default 15000)
#   SPAN_RATE      spans per second (default 15000)
#   METRIC_SERIES  series sent every 15 s by the metric load (default 20000)
# The defaults are half of the measured capacity shared among the signals:
# on the 2-core machine of BENCHMARKS.md each signal alone saturates the CPU
# at about 65k records/s (logs) or 100k spans/s (traces), so about a quarter
# of each, plus a Prometheus-sized metric load, keeps the machine half busy.
# Needs release binaries (cargo build --release -p periscope-collector
# -p periscope-benches). Writes soak-<date>/samples.csv and prints the first
# and last samples after warm-up. Everything binds 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs=${1:-3600}
log_rate=${2:-15000}
span_rate=${3:-15000}
series=${4:-20000}
target="${CARGO_TARGET_DIR:-$root/target}/release"
out="$root/soak-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$out"
data="$out/data"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(free_port); otlp_http=$(free_port); http=$(free_port)

"$target/periscope" serve --data-dir "$data" \
  --otlp-grpc-addr "127.0.0.1:$grpc" --otlp-http-addr "127.0.0.1:$otlp_http" --http-addr "127.0.0.1:$http" \
  > "$out/collector.stdout" 2> "$out/collector.stderr" &
pid=$!
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
until curl -sf "127.0.0.1:$http/readyz" >/dev/null; do sleep 0.5; done

loadgen() {
  "$target/periscope-loadgen" --endpoint "http://127.0.0.1:$grpc" --duration "$secs" --report-every 60 "$@"
}
loadgen --signal logs --rate "$log_rate" --clients 4 > "$out/logs.txt" 2>&1 &
loadgen --signal traces --rate "$span_rate" --clients 2 > "$out/traces.txt" 2>&1 &
loadgen --signal metrics --series "$series" --interval-ms 15000 --metrics-start "$(( $(date +%s) / 15 * 15 ))" \
  --rate $((series / 15)) --clients 1 \
  > "$out/metrics.txt" 2>&1 &

# A steady query load: one query of each kind every two seconds.
(
  end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    now=$(date +%s)
    for path in \
      "/api/v1/logs/search?q=error&limit=100&start=$((now - 900))&end=$now" \
      "/api/v1/logs/histogram?start=$((now - 3600))&end=$now&step=1m" \
      "/api/v1/traces?limit=20&start=$((now - 900))&end=$now" \
      "/api/v1/service-map?start=$((now - 900))&end=$now" \
      "/prometheus/api/v1/query_range?query=sum%20by%20(service)%20(rate(http_server_requests_total%5B5m%5D))&start=$((now - 3600))&end=$now&step=60"; do
      curl -s -o /dev/null -w "%{http_code} %{time_total}\n" "127.0.0.1:$http$path" >> "$out/queries.txt"
    done
    sleep 2
  done
) &

echo "minute,rss_kib,rss_anon_kib,rss_file_kib,fds,threads" > "$out/samples.csv"
for ((m = 0; m * 60 <= secs; m++)); do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
  file=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
  echo "$m,$rss,$anon,$file,$fds,$threads" | tee -a "$out/samples.csv"
  sleep 60
done

echo "--- $out"
echo "queries: $(wc -l < "$out/queries.txt") answered, status counts:"
awk '{print $1}' "$out/queries.txt" | sort | uniq -c
echo "after warm-up (minute 5) and at the end:"
sed -n '7p;$p' "$out/samples.csv"
tail -n 3 "$out/logs.txt" "$out/traces.txt" "$out/metrics.txt"
