# Shared helpers for the benchmark harnesses (sourced). Everything a harness creates
# (temp dir, daemon, network namespaces) is removed by the EXIT trap; every wait is
# bounded. BENCH_SMOKE=1 makes every harness tiny (ctest smoke run: correctness only).
set -euo pipefail
HERE_BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE_BENCH/.." && pwd)
SUBLEASE_BIN=${SUBLEASE_BIN:-$ROOT/build/bin}  # scripts/bench.sh sets it
CNI_PLUGINS=${CNI_PLUGINS:-/usr/lib/cni}
BENCH_OUT=${BENCH_OUT:-$(dirname "$SUBLEASE_BIN")/bench-results}
BENCH_SMOKE=${BENCH_SMOKE:-0}
B_DIR=""; B_DAEMON_PID=""; B_NETNS=()
mkdir -p "$BENCH_OUT"

die() { echo "FAIL: $*" >&2; exit 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# proc_cpu_ms PID: user+system CPU time of a process so far, in ms.
proc_cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14+$15)*1000/hz)}' "/proc/$1/stat"; }

b_cleanup() {
  local rc=$?
  if [ -n "$B_DAEMON_PID" ] && kill -0 "$B_DAEMON_PID" 2>/dev/null; then
    kill -TERM "$B_DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$B_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$B_DAEMON_PID" 2>/dev/null || true
  fi
  for ns in "${B_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ $rc -ne 0 ] && [ -n "$B_DIR" ] && [ -f "$B_DIR/daemon.log" ]; then
    echo "--- daemon log ---" >&2; tail -n 30 "$B_DIR/daemon.log" >&2
  fi
  [ -n "$B_DIR" ] && rm -rf "$B_DIR"
  exit $rc
}

b_setup() {
  for b in subleased sublease ipam_exec_bench socket_load_bench; do
    [ -x "$SUBLEASE_BIN/$b" ] || die "$SUBLEASE_BIN/$b missing: build first (scripts/bench.sh builds)"
  done
  B_DIR=$(mktemp -d /tmp/sublease-bench.XXXXXX)
  trap b_cleanup EXIT
}

# b_subnet FILE NAME PROVIDER CIDR: a Kube-OVN Subnet manifest.
b_subnet() {
  printf 'apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: %s\nspec:\n  provider: %s\n  cidrBlock: "%s"\n---\n' \
    "$2" "$3" "$4" >>"$1"
}

# b_start_daemon SUBNETS DB: starts subleased --standalone on $B_DIR/sublease.sock and
# waits (bounded) for its status endpoint.
b_start_daemon() {
  SOCK="$B_DIR/sublease.sock"
  "$SUBLEASE_BIN/subleased" --standalone --subnets "$1" --socket "$SOCK" --db "$2" \
    --metrics-address "" --log-level warn >"$B_DIR/daemon.log" 2>&1 &
  B_DAEMON_PID=$!
  for _ in $(seq 1 300); do
    [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://x/v1/cni/status >/dev/null 2>&1 && return 0
    kill -0 "$B_DAEMON_PID" 2>/dev/null || die "subleased exited: $(cat "$B_DIR/daemon.log")"
    sleep 0.1
  done
  die "subleased not ready within 30 s"
}

b_stop_daemon() {
  [ -n "$B_DAEMON_PID" ] || return 0
  kill -TERM "$B_DAEMON_PID"
  for _ in $(seq 1 100); do kill -0 "$B_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$B_DAEMON_PID" 2>/dev/null || true
  B_DAEMON_PID=""
}

b_header() {
  echo "== $1 =="
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average $(loadavg)"
}
