#!/usr/bin/env bash
# Measurement 1 (BENCHMARKS.md): one IPAM call, whole process. Execs `sublease` as the IPAM
# plugin exactly as a main plugin does (stdin config, CNI env) for ADD then DEL, N times,
# against a running standalone daemon, interleaved with Debian's host-local the same way.
#   N=2000 bench/ipam_bench.sh
. "$(dirname "$0")/lib.sh"
N=${N:-2000}; [ "$BENCH_SMOKE" = 1 ] && N=10
b_setup
[ -x "$CNI_PLUGINS/host-local" ] || die "$CNI_PLUGINS/host-local missing (containernetworking-plugins)"
b_subnet "$B_DIR/subnets.yaml" bench bench.default 10.200.0.0/16
b_start_daemon "$B_DIR/subnets.yaml" "$B_DIR/sublease.db"
printf '{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"sublease","server_socket":"%s","provider":"bench.default"}}' \
  "$SOCK" >"$B_DIR/sublease.json"
printf '{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","ranges":[[{"subnet":"10.201.0.0/16"}]],"dataDir":"%s/host-local"}}' \
  "$B_DIR" >"$B_DIR/host-local.json"
b_header "1. one IPAM call, whole process: ADD then DEL, N=$N, interleaved"
"$SUBLEASE_BIN/ipam_exec_bench" -n "$N" --cni-path "$SUBLEASE_BIN:$CNI_PLUGINS" --json "$BENCH_OUT/ipam.json" \
  --variant sublease "$SUBLEASE_BIN/sublease" "$B_DIR/sublease.json" \
  --variant host-local "$CNI_PLUGINS/host-local" "$B_DIR/host-local.json"
live=$(sqlite3 "file:$B_DIR/sublease.db?mode=ro" "select count(*) from leases where state <> 'released'" 2>/dev/null || echo "?")
[ "$live" = 0 ] || [ "$live" = "?" ] || die "$live lease(s) left after every DEL"
echo "load average after: $(loadavg)"
