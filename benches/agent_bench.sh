#!/usr/bin/env bash
# Node-agent benchmarks (issue 5): periscope-agent tailing CRI log files and
# shipping OTLP/gRPC (zstd) to periscope-ack-sink, an endpoint that only
# acknowledges; and, side by side on the same files, rsyslog's imfile
# shipping over TCP (omfwd) to /work/shared/bench/tcp_sink.py.
#
# Usage: benches/agent_bench.sh MODE
#   throughput  10 files of 256-byte CRI lines (1 GiB in all) read from the
#               beginning; MiB/s, agent CPU seconds, cores, CPU-s per GiB,
#               peak RSS (VmHWM)
#   idle        10,000 files present and idle (read once first); agent CPU
#               over 60 s after it settled, and its open descriptors
#   rsyslog     the throughput files shipped by rsyslogd (imfile, omfwd TCP)
#   compare     throughput, then rsyslog on the same files
# Environment: FILES, LINES_PER_FILE (default 10 x 419,430 lines = 1 GiB),
# IDLE_FILES (10000), IDLE_SECONDS (60), SETTLE_SECONDS (10),
# SKIP_BUILD=1 (use built binaries), KEEP=1 (keep the work directory),
# BENCH_DIR (where the generated files are cached; default /tmp/periscope-agent-bench),
# AGENT_ARGS (extra periscope-agent flags). Binaries are taken from
# $CARGO_TARGET_DIR/release (default target/release).
#
# Every result is one JSON line on stdout; progress goes to stderr. CPU is
# utime + stime of the process from /proc/PID/stat, read when the sink has
# every line; wall time runs from the sender's start to the sink's last
# request (agent) or last byte (rsyslog).
set -euo pipefail

mode=${1:-throughput}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -p periscope-agent -p periscope-benches --bin periscope-agent --bin periscope-ack-sink >&2
fi
agent=$target/release/periscope-agent
sink=$target/release/periscope-ack-sink
tcp_sink=${TCP_SINK:-/work/shared/bench/tcp_sink.py}

files=${FILES:-10}
lines_per_file=${LINES_PER_FILE:-419430}
idle_files=${IDLE_FILES:-10000}
idle_seconds=${IDLE_SECONDS:-60}
settle_seconds=${SETTLE_SECONDS:-10}
bench_dir=${BENCH_DIR:-/tmp/periscope-agent-bench}
clk_tck=$(getconf CLK_TCK)

work=$(mktemp -d -t periscope-agent-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

log() { echo "agent_bench: $*" >&2; }

# CPU seconds (utime + stime) of a process, all threads.
cpu_secs() {
    # Fields after the command name, which may hold spaces: utime is the
    # 12th and stime the 13th of them.
    sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$clk_tck" '{ printf "%.2f", ($12 + $13) / t }'
}
hwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# Generates (once, cached by parameters) a tree of files; prints its directory.
dataset() {
    local n=$1 per=$2 dir="$bench_dir/cri-$1x$2"
    if [ ! -f "$dir/meta.json" ]; then
        log "generating $n files of $per lines under $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        python3 benches/agent_bench_gen.py "$dir" "$n" "$per" 256 >"$dir/meta.json.tmp"
        mv "$dir/meta.json.tmp" "$dir/meta.json"
    fi
    echo "$dir"
}

# Waits for a line matching $2 in file $1 (up to $3 seconds) and prints it.
wait_line() {
    local file=$1 pat=$2 secs=$3 i line
    for ((i = 0; i < secs * 20; i++)); do
        line=$(grep -m1 -- "$pat" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "$line"
            return 0
        fi
        sleep 0.05
    done
    return 1
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

start_sink() {
    local expect=$1
    "$sink" --expect-records "$expect" >"$work/sink.out" 2>"$work/sink.err" &
    sink_pid=$!
    pids+=("$sink_pid")
    local line
    line=$(wait_line "$work/sink.out" '"listening"' 10) || { cat "$work/sink.err" >&2; exit 1; }
    sink_addr=$(json_field "$line" addr)
}

start_agent() {
    local glob=$1
    rm -rf "$work/agent-data"
    # shellcheck disable=SC2086
    "$agent" --read-from beginning --include "$glob" --endpoint "http://$sink_addr" \
        --data-dir "$work/agent-data" --metrics-interval 0s --http-addr 127.0.0.1:0 \
        --node-name bench-node ${AGENT_ARGS:-} >"$work/agent.out" 2>"$work/agent.err" &
    agent_pid=$!
    pids+=("$agent_pid")
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

run_throughput() {
    local dir meta lines bytes glob t0 done_line last_ms wall cpu hwm sink_cpu
    dir=$(dataset "$files" "$lines_per_file")
    meta=$(cat "$dir/meta.json")
    lines=$(json_field "$meta" lines)
    bytes=$(json_field "$meta" bytes)
    glob=$(json_field "$meta" glob)
    cat "$dir"/var/log/pods/*/*/*.log >/dev/null # page cache, as for rsyslog
    start_sink "$lines"
    local load_before
    load_before=$(load1)
    t0=$(now_ms)
    start_agent "$glob"
    done_line=$(wait_line "$work/sink.out" '"complete"' 900) || {
        log "sink incomplete after 900 s"
        kill -USR1 "$sink_pid"
        sleep 0.2
        cat "$work/sink.out" "$work/agent.err" >&2
        exit 1
    }
    cpu=$(cpu_secs "$agent_pid")
    hwm=$(hwm_mib "$agent_pid")
    sink_cpu=$(cpu_secs "$sink_pid")
    last_ms=$(json_field "$done_line" last_unix_ms)
    stop "$agent_pid"
    kill -USR1 "$sink_pid"
    sleep 0.2
    local records body req
    records=$(json_field "$done_line" records)
    body=$(json_field "$done_line" body_bytes)
    req=$(json_field "$done_line" request_bytes)
    wall=$(awk -v a="$t0" -v b="$last_ms" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    python3 - "$bytes" "$lines" "$records" "$body" "$req" "$wall" "$cpu" "$hwm" "$sink_cpu" "$load_before" "$(load1)" "$files" <<'EOF'
import json, sys
b, lines, rec, body, req = (int(x) for x in sys.argv[1:6])
wall, cpu, hwm, sink_cpu, l0, l1 = (float(x) for x in sys.argv[6:12])
gib = b / 2**30
print(json.dumps({
    "bench": "agent-throughput", "files": int(sys.argv[12]), "lines": lines, "file_bytes": b,
    "records_acked": rec, "body_bytes": body, "otlp_bytes_uncompressed": req,
    "wall_s": wall, "mib_per_s": round(b / 2**20 / wall, 1), "lines_per_s": round(lines / wall),
    "agent_cpu_s": cpu, "agent_cores": round(cpu / wall, 2), "agent_cpu_s_per_gib": round(cpu / gib, 2),
    "agent_peak_rss_mib": hwm, "sink_cpu_s": sink_cpu, "load1_before": l0, "load1_after": l1,
}))
EOF
    if [ "$records" != "$lines" ]; then
        log "records acknowledged ($records) differ from lines written ($lines)"
    fi
    stop "$sink_pid"
}

run_rsyslog() {
    local dir meta bytes glob port t0 t1 cpu hwm wall sink_pid rs_pid
    command -v rsyslogd >/dev/null || { log "rsyslogd not installed (apt-get install -y rsyslog)"; exit 1; }
    dir=$(dataset "$files" "$lines_per_file")
    meta=$(cat "$dir/meta.json")
    bytes=$(json_field "$meta" bytes)
    glob=$(json_field "$meta" glob)
    cat "$dir"/var/log/pods/*/*/*.log >/dev/null
    # tcp_sink.py takes a port number: ask the kernel for a free one.
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$work/rsyslog"
    cat >"$work/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$work/rsyslog" maxMessageSize="64k")
module(load="imfile" mode="inotify")
# The line as read, newline-terminated: the sink receives the file bytes.
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="ship") {
  action(type="omfwd" target="127.0.0.1" port="$port" protocol="tcp" template="raw")
}
input(type="imfile" file="$glob" tag="pods" ruleset="ship")
EOF
    python3 "$tcp_sink" "$port" "$bytes" >"$work/tcp_sink.out" &
    sink_pid=$!
    pids+=("$sink_pid")
    sleep 0.3
    local load_before
    load_before=$(load1)
    t0=$(now_ms)
    rsyslogd -n -f "$work/rsyslog/rsyslog.conf" -i "$work/rsyslog/rsyslogd.pid" >"$work/rsyslog.out" 2>&1 &
    rs_pid=$!
    pids+=("$rs_pid")
    wait "$sink_pid" || true
    t1=$(now_ms)
    cpu=$(cpu_secs "$rs_pid")
    hwm=$(hwm_mib "$rs_pid")
    stop "$rs_pid"
    local got
    got=$(cat "$work/tcp_sink.out")
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    python3 - "$bytes" "$got" "$wall" "$cpu" "$hwm" "$load_before" "$(load1)" "$files" <<'EOF'
import json, sys
b, got = int(sys.argv[1]), int(sys.argv[2])
wall, cpu, hwm, l0, l1 = (float(x) for x in sys.argv[3:8])
print(json.dumps({
    "bench": "rsyslog-imfile-omfwd", "files": int(sys.argv[8]), "file_bytes": b, "tcp_bytes": got,
    "wall_s": wall, "mib_per_s": round(b / 2**20 / wall, 1),
    "cpu_s": cpu, "cores": round(cpu / wall, 2), "cpu_s_per_gib": round(cpu / (b / 2**30), 2),
    "peak_rss_mib": hwm, "load1_before": l0, "load1_after": l1,
}))
EOF
}

run_idle() {
    local dir meta lines glob fd0 fd1 c0 c1 t0 t1 open_budget
    dir=$(dataset "$idle_files" 10)
    meta=$(cat "$dir/meta.json")
    lines=$(json_field "$meta" lines)
    glob=$(json_field "$meta" glob)
    start_sink "$lines"
    start_agent "$glob"
    wait_line "$work/sink.out" '"complete"' 300 >/dev/null || { log "idle files not shipped"; cat "$work/agent.err" >&2; exit 1; }
    log "all $lines lines of $idle_files files acknowledged; settling ${settle_seconds}s"
    sleep "$settle_seconds"
    fd0=$(ls "/proc/$agent_pid/fd" | wc -l)
    c0=$(cpu_secs "$agent_pid")
    t0=$(now_ms)
    local load_before
    load_before=$(load1)
    log "measuring ${idle_seconds}s"
    sleep "$idle_seconds"
    c1=$(cpu_secs "$agent_pid")
    t1=$(now_ms)
    fd1=$(ls "/proc/$agent_pid/fd" | wc -l)
    # The agent's open-file budget: its default unless AGENT_ARGS sets one.
    open_budget=$(sed -n 's/.*--max-open-files[= ]\([0-9]*\).*/\1/p' <<<"${AGENT_ARGS:-}")
    open_budget=${open_budget:-1024}
    python3 - "$idle_files" "$c0" "$c1" "$t0" "$t1" "$fd0" "$fd1" "$open_budget" "$(rss_mib "$agent_pid")" "$(hwm_mib "$agent_pid")" "$load_before" "$(load1)" <<'EOF'
import json, sys
n = int(sys.argv[1]); c0, c1 = float(sys.argv[2]), float(sys.argv[3])
t0, t1 = int(sys.argv[4]), int(sys.argv[5])
wall = (t1 - t0) / 1000
print(json.dumps({
    "bench": "agent-idle", "files": n, "window_s": round(wall, 1), "agent_cpu_s": round(c1 - c0, 2),
    "agent_core_percent": round(100 * (c1 - c0) / wall, 2), "fds_start": int(sys.argv[6]),
    "fds_end": int(sys.argv[7]), "max_open_files": int(sys.argv[8]), "rss_mib": float(sys.argv[9]),
    "peak_rss_mib": float(sys.argv[10]), "load1_before": float(sys.argv[11]), "load1_after": float(sys.argv[12]),
}))
EOF
    stop "$agent_pid"
    stop "$sink_pid"
}

case "$mode" in
throughput) run_throughput ;;
rsyslog) run_rsyslog ;;
compare)
    run_throughput
    run_rsyslog
    ;;
idle) run_idle ;;
*)
    echo "usage: $0 throughput|idle|rsyslog|compare" >&2
    exit 2
    ;;
esac
