#!/usr/bin/env bash
# Measurement 3 (BENCHMARKS.md): the daemon under concurrency. 1, 8 and 64 concurrent
# clients on the Unix socket, each doing POST /v1/cni/add then /v1/cni/del for a fresh
# attachment, one connection per request as the plugin does. Persistence on (the WAL
# database in a temp dir). Reports allocations/s (ADD + its DEL), p50/p99, and the
# daemon's CPU per allocation.
#   N=20000 LEVELS=1,8,64 bench/load_bench.sh
. "$(dirname "$0")/lib.sh"
N=${N:-20000}; LEVELS=${LEVELS:-1,8,64}; [ "$BENCH_SMOKE" = 1 ] && N=200
b_setup
b_subnet "$B_DIR/subnets.yaml" bench bench.default 10.200.0.0/16
b_start_daemon "$B_DIR/subnets.yaml" "$B_DIR/sublease.db"
b_header "3. daemon under concurrency: $N ADD+DEL pairs per level, levels $LEVELS"
echo "[" >"$BENCH_OUT/load.json"
sep=""
for c in ${LEVELS//,/ }; do
  before=$(proc_cpu_ms "$B_DAEMON_PID")
  "$SUBLEASE_BIN/socket_load_bench" --socket "$SOCK" --provider bench.default -c "$c" -n "$N" \
    --max-seconds 120 --json "$B_DIR/level.json" | { [ -n "$sep" ] && sed 1d || cat; }
  after=$(proc_cpu_ms "$B_DAEMON_PID")
  pairs=$(grep -o '"pairs":[0-9]*' "$B_DIR/level.json" | cut -d: -f2)
  cpu_us=$(( (after - before) * 1000 / (pairs > 0 ? pairs : 1) ))
  echo "         daemon CPU: $cpu_us us per allocation (ADD+DEL); load average $(loadavg)"
  printf '%s%s' "$sep" "$(sed 's/^\[//; s/\]$//; s/}$/,"daemon_cpu_us_per_alloc":'"$cpu_us"'}/' "$B_DIR/level.json")" >>"$BENCH_OUT/load.json"
  sep=","
done
echo "]" >>"$BENCH_OUT/load.json"
live=$(sqlite3 "file:$B_DIR/sublease.db?mode=ro" "select count(*) from leases where state <> 'released'" 2>/dev/null || echo "?")
[ "$live" = 0 ] || [ "$live" = "?" ] || die "$live lease(s) left after every DEL"
