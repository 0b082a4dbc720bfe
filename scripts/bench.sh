#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md, in order, with progress (several minutes).
# Builds a Release tree first (BUILD_DIR, default build-bench). Needs root for the
# network-namespace chain benchmark (skipped with a note otherwise). Benchmarks report;
# they never fail on timing — a non-zero exit means a harness found a correctness error.
#   ./scripts/bench.sh            # everything
#   ./scripts/bench.sh ipam load  # some: ipam chain load cluster scale
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
export SUBLEASE_BIN=$build/bin
export BENCH_OUT=${BENCH_OUT:-$build/bench-results}
which=("$@"); [ ${#which[@]} -eq 0 ] && which=(ipam chain load cluster scale)
log=$BENCH_OUT/bench-$(date +%Y%m%d-%H%M%S).log
mkdir -p "$BENCH_OUT"

echo "[bench] building (Release) in $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSUBLEASE_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" --target subleased sublease ipam_exec_bench socket_load_bench scale_bench fill_db
{
  echo "[bench] $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "[bench] commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$log"
rc=0
step=0
for b in "${which[@]}"; do
  step=$((step + 1))
  echo "[bench] ($step/${#which[@]}) $b — started $(date +%T)" | tee -a "$log"
  case $b in
    ipam | chain | load | scale)
      if [ "$b" = chain ] && [ "$(id -u)" -ne 0 ]; then
        echo "[bench] chain skipped: needs root (network namespaces)" | tee -a "$log"; continue
      fi
      bash "$root/bench/${b}_bench.sh" 2>&1 | tee -a "$log" || rc=1 ;;
    cluster)
      python3 "$root/bench/cluster_bench.py" --json "$BENCH_OUT/cluster.json" 2>&1 | tee -a "$log" || rc=1 ;;
    *) echo "unknown benchmark $b (ipam chain load cluster scale)" >&2; exit 2 ;;
  esac
done
echo "[bench] done; results in $BENCH_OUT (JSON per harness) and $log" | tee -a "$log"
exit $rc
