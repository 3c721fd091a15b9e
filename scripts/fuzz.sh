#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS,
# default 30) and fails on the first crash, panic, timeout or memory blow-up.
# libFuzzer needs a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one
# build it. Targets are built once, optimized and without a sanitizer: the
# project forbids `unsafe`, so what the runs look for is panics, overflows
# (overflow checks are on for our crates only, see fuzz/Cargo.toml:
# dependencies' own debug assertions are not findings of ours), hangs and
# unbounded memory. Committed seed inputs in fuzz/seeds/<target> start each
# run; FUZZ_SEED (default 1) fixes libFuzzer's random choices, so that a run
# in CI can be repeated.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-30}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -s none
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  seeds=()
  if [ -d "seeds/$target" ]; then seeds=("seeds/$target"); fi
  echo "fuzz: $target for ${secs}s"
  cargo fuzz run -O -s none "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$secs" -seed="${FUZZ_SEED:-1}" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1
done
