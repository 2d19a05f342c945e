#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (a separate build folder) and runs each for
# SECONDS (default 60), one after the other, from its seeds (fuzz/seeds/TARGET) and its growing
# corpus. A crash, a sanitizer report or an allocation above 2 GiB stops the target and leaves
# crash-* / oom-* files in BUILD/artifacts/TARGET/; the script then exits non-zero.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   targets: idx problem config checksum checkpoint cifar chestx14_csv utkface_name, and qm9 when
#   RDKit is installed (the build's fuzz/targets.txt lists them). Default: all of them.
# Environment: BAYESAGG_FUZZ_BUILD (build folder, default build-fuzz), CXX (default clang++).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
build="${BAYESAGG_FUZZ_BUILD:-build-fuzz}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
CXX="${CXX:-clang++}" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBAYESAGG_BUILD_FUZZ=ON \
  -DBAYESAGG_BUILD_TESTS=OFF -DBAYESAGG_BUILD_BENCH=OFF -DBAYESAGG_BUILD_PYTHON=OFF \
  -DBAYESAGG_WITH_IMAGES=OFF "${launcher[@]}" >/dev/null
((${#targets[@]})) || read -r -a targets < <(tr ';' ' ' <"$build/fuzz/targets.txt")
cmake --build "$build" -j2 --target "${targets[@]/%/_fuzz}"
# LibTorch is not instrumented: its process-lifetime caches are not leaks, and its allocator pairs
# are its own business.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:alloc_dealloc_mismatch=0}"
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus" "$build/artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  if ! "$build/fuzz/${t}_fuzz" -max_total_time="$seconds" -malloc_limit_mb=2048 -rss_limit_mb=6144 \
      -timeout=20 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" \
      "$corpus" "fuzz/seeds/$t" >"$build/$t.log" 2>&1; then
    echo "fuzz: $t FAILED (see $build/$t.log and $build/artifacts/$t/)"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" "$build/$t.log" || true
done
exit $status
