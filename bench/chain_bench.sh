#!/usr/bin/env bash
# Measurement 2 (BENCHMARKS.md): the whole chain. Debian's real macvlan plugin with sublease
# as its IPAM vs with host-local, in network namespaces this script creates (a stand-in
# host namespace whose eth0 is a veth, as tests/e2e do, and a pod namespace): ADD+DEL,
# interleaved, N times. Needs root.
#   N=500 bench/chain_bench.sh
. "$(dirname "$0")/lib.sh"
N=${N:-500}; [ "$BENCH_SMOKE" = 1 ] && N=5
[ "$(id -u)" -eq 0 ] || die "the chain benchmark needs root (network namespaces)"
b_setup
for p in macvlan host-local; do [ -x "$CNI_PLUGINS/$p" ] || die "$CNI_PLUGINS/$p missing"; done
id="slb$$"
ip netns add "$id-host"; B_NETNS+=("$id-host")
ip netns add "$id-pod"; B_NETNS+=("$id-pod")
ip -n "$id-host" link add eth0 type veth peer name eth0peer
ip -n "$id-host" link set eth0 up; ip -n "$id-host" link set eth0peer up
b_subnet "$B_DIR/subnets.yaml" bench bench.default 10.200.0.0/16
b_start_daemon "$B_DIR/subnets.yaml" "$B_DIR/sublease.db"
printf '{"cniVersion":"1.0.0","name":"macvlan","type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"sublease","server_socket":"%s","provider":"bench.default"}}' \
  "$SOCK" >"$B_DIR/macvlan-sublease.json"
printf '{"cniVersion":"1.0.0","name":"macvlan","type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.201.0.0/16"}]],"dataDir":"%s/host-local"}}' \
  "$B_DIR" >"$B_DIR/macvlan-host-local.json"
b_header "2. whole chain: macvlan ADD then DEL in network namespaces, N=$N, interleaved"
"$SUBLEASE_BIN/ipam_exec_bench" -n "$N" --hostns "$id-host" --netns "/var/run/netns/$id-pod" \
  --cni-path "$SUBLEASE_BIN:$CNI_PLUGINS" --json "$BENCH_OUT/chain.json" \
  --variant macvlan+sublease "$CNI_PLUGINS/macvlan" "$B_DIR/macvlan-sublease.json" \
  --variant macvlan+host-local "$CNI_PLUGINS/macvlan" "$B_DIR/macvlan-host-local.json"
ip -n "$id-pod" link show net1 >/dev/null 2>&1 && die "net1 left in the pod namespace after DEL"
echo "load average after: $(loadavg)"
