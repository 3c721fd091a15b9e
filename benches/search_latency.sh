#!/usr/bin/env bash
# Times searches against a running collector: newest-100 term queries and a
# 24 h histogram, each RUNS times after one warm-up; prints p50/min/max in ms.
# Usage: benches/search_latency.sh http://127.0.0.1:8080 [RUNS]
set -euo pipefail
base=${1:?query base url, e.g. http://127.0.0.1:8080}
runs=${2:-20}
now=$(date +%s)
start=$((now - 86400))

time_query() {
    local name=$1 path=$2
    curl -sf -o /dev/null "$base$path" # warm-up
    local times=()
    for _ in $(seq "$runs"); do
        times+=("$(curl -sf -o /dev/null -w '%{time_total}' "$base$path")")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v name="$name" '
        { t[NR] = $1 * 1000 }
        END { printf "%-40s p50 %7.1f ms  min %7.1f ms  max %7.1f ms  (%d runs)\n", name, t[int((NR + 1) / 2)], t[1], t[NR], NR }'
}

time_query "term 'timeout', newest 100, 24 h" "/api/v1/logs/search?q=timeout&limit=100&start=$start&end=$now"
time_query "term 'error' + service, newest 100, 24 h" "/api/v1/logs/search?q=error&service=checkout&limit=100&start=$start&end=$now"
time_query "attribute status 503, newest 100, 24 h" "/api/v1/logs/search?q=attributes.http.status_code:503&limit=100&start=$start&end=$now"
time_query "all records, newest 100, 24 h" "/api/v1/logs/search?limit=100&start=$start&end=$now"
time_query "histogram all, 24 h, step 5m" "/api/v1/logs/histogram?start=$start&end=$now&step=5m"
time_query "histogram 'error', 24 h, step 5m" "/api/v1/logs/histogram?q=error&start=$start&end=$now&step=5m"
