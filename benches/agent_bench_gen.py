#!/usr/bin/env python3
"""Log files for the node-agent benchmarks (benches/agent_bench.sh).

Writes a /var/log/pods-like tree under ROOT:
ROOT/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log, in the CRI format the
kubelet writes (`<RFC3339Nano> stdout F <message>`), every line exactly
LINE_BYTES long including its newline. Messages are access-log and
application lines with varying numbers, ids and paths, so they compress
about as well as real logs (not as well as a repeated line would).
Deterministic for given arguments.

    agent_bench_gen.py ROOT FILES LINES_PER_FILE [LINE_BYTES]

Prints one JSON line: files, lines, bytes, paths glob.
"""

import json
import os
import random
import sys

PREFIX = "2026-12-05T10:00:00.000000000Z stdout F "  # 40 bytes


def messages(rng, n, width):
    """n message bodies of exactly `width` bytes."""
    methods = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
    paths = ["/api/v1/items", "/api/v1/users", "/healthz", "/api/v2/orders", "/static/app.js", "/login"]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    words = ("request handled cache miss upstream retry timeout connection pool order "
             "payment user session token refresh shard replica commit flush queue").split()
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            m = '10.%d.%d.%d - - "%s %s/%d HTTP/1.1" %d %d "-" "Mozilla/5.0 (X11; Linux x86_64)" rt=%.3f id=%032x' % (
                rng.randrange(256), rng.randrange(256), rng.randrange(256),
                rng.choice(methods), rng.choice(paths), rng.randrange(100000),
                rng.choice([200, 200, 200, 201, 204, 301, 404, 500]), rng.randrange(100000),
                rng.random(), rng.getrandbits(128))
        else:
            m = "%s [%s] %s trace_id=%032x span_id=%016x user=%d latency_ms=%d" % (
                rng.choice(levels), rng.choice(["worker", "http", "db", "cache"]),
                " ".join(rng.choice(words) for _ in range(rng.randrange(4, 12))),
                rng.getrandbits(128), rng.getrandbits(64), rng.randrange(10**6), rng.randrange(5000))
        m = (m + " " + " ".join(rng.choice(words) for _ in range(40)))[:width]
        out.append(m.ljust(width, "."))
    return out


def main():
    root, files, per_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    line_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    width = line_bytes - len(PREFIX) - 1
    if width < 1:
        sys.exit("LINE_BYTES too small for the CRI prefix")
    rng = random.Random(42)
    pool = messages(rng, 16384, width) if per_file > 0 else []
    total = 0
    for i in range(files):
        d = os.path.join(root, "var/log/pods", "bench_load-%05d_%08x-0000-4000-8000-%012x" % (i, i, i), "app")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "0.log"), "wb", buffering=1 << 20) as f:
            # A timestamp per line (1 µs apart) and a message from the pool,
            # rotated per file so files differ.
            chunk = []
            for n in range(per_file):
                us = n
                ts = "2026-12-05T10:%02d:%02d.%06d000Z" % (us // 60_000_000 % 60, us // 1_000_000 % 60, us % 1_000_000)
                chunk.append(ts + " stdout F " + pool[(n * 7 + i * 131) % len(pool)] + "\n")
                if len(chunk) == 8192:
                    f.write("".join(chunk).encode())
                    chunk.clear()
            f.write("".join(chunk).encode())
        total += per_file * line_bytes
    print(json.dumps({
        "files": files,
        "lines": files * per_file,
        "bytes": total,
        "line_bytes": line_bytes,
        "glob": os.path.join(root, "var/log/pods/*/*/*.log"),
    }))


if __name__ == "__main__":
    main()
