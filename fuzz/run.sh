#!/usr/bin/env bash
# Builds weir's fuzz targets with libFuzzer on stable Rust and runs each for a bounded time.
#
#   fuzz/run.sh [target...]          every target when none is named
#   SECONDS_PER_TARGET=600 fuzz/run.sh config decide
#   BUILD_ONLY=1 fuzz/run.sh         build, do not run
#
# Each target's corpus lives outside the repo, in ${XDG_CACHE_HOME:-$HOME/.cache}/weir/fuzz-corpus/
# <target>, seeded from fuzz/seeds/<target>/, so that runs build on each other. A crash leaves
# its input in fuzz/artifacts/<target>/ (named in the output) and makes this script exit 1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

all_targets=(config route prometheus_text decide)
seconds="${SECONDS_PER_TARGET:-20}"
rss_limit_mb="${RSS_LIMIT_MB:-2048}"
corpus_root="${XDG_CACHE_HOME:-$HOME/.cache}/weir/fuzz-corpus"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=("${all_targets[@]}")
fi
for target in "${targets[@]}"; do
  if [[ ! " ${all_targets[*]} " =~ " ${target} " ]]; then
    echo "unknown target '$target' (targets: ${all_targets[*]})" >&2
    exit 2
  fi
done

# libfuzzer-sys compiles libFuzzer's C++ sources with the system compiler.
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
  echo "== installing g++ (libFuzzer is C++)"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq g++ >/dev/null
fi

# The flags cargo-fuzz passes, less AddressSanitizer (nightly only; the crates forbid unsafe
# code, so memory errors are not what these targets look for). All are stable `-C` flags.
# --target makes cargo keep RUSTFLAGS off build scripts and proc macros, which must not be
# instrumented (they would need libFuzzer's symbols to load).
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$here/target"

echo "== building ${targets[*]} (release, sancov, $host)"
bin_args=()
for target in "${targets[@]}"; do bin_args+=(--bin "$target"); done
cargo build --release --target "$host" "${bin_args[@]}"
bin_dir="$CARGO_TARGET_DIR/$host/release"

if [ -n "${BUILD_ONLY:-}" ]; then
  exit 0
fi

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="$corpus_root/$target"
  artifacts="$here/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  log="$(mktemp -t "weir-fuzz-$target.XXXXXX.log")"
  echo "== $target: ${seconds}s, corpus $corpus"
  status=0
  # Seeds are read as a second corpus dir: new finds go to the first one only.
  seeds=()
  if [ -d "$here/seeds/$target" ]; then seeds=("$here/seeds/$target"); fi
  "$bin_dir/$target" "$corpus" "${seeds[@]}" \
    -max_total_time="$seconds" \
    -rss_limit_mb="$rss_limit_mb" \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    >"$log" 2>&1 || status=$?
  # The last status line (`#N DONE cov: .. ft: .. corp: .. exec/s: ..`) and the final stats.
  last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
  executed="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  seconds_run="$(sed -n 's/^stat::.*//;s/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)"
  echo "   $last"
  echo "   executions: ${executed:-?} in ${seconds_run:-?}s"
  summary+=("$target: ${executed:-?} execs in ${seconds_run:-?}s; $(sed 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*//' <<<"$last")")
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "   FAILED (exit $status); log: $log"
    grep -E '^(==[0-9]+== ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written to)' "$log" | head -n 20 || true
    sed -n '/panicked/,/^note:/p' "$log" | head -n 20 || true
  else
    rm -f "$log"
  fi
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "== crashes in: ${failed[*]} (inputs in $here/artifacts/)" >&2
  exit 1
fi
