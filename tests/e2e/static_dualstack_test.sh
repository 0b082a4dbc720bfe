#!/usr/bin/env bash
# Static addresses through the real macvlan plugin (Multus's runtimeConfig.ips and the
# legacy CNI_ARGS IP=), and a dual-stack Subnet that gives one address of each family.
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" v4net v4.default 10.70.0.0/24 "" 10.70.0.2..10.70.0.9
write_subnet "$subnets" dual dual.default "10.71.0.0/24,fd00:71::/120" ""
start_daemon "$subnets"
host="$E2E_ID-host"
host_ns_with_eth0 "$host"
conf() { jq -nc --arg p "$1" --arg s "$SOCK" '{cniVersion:"1.0.0",name:"net",type:"macvlan",master:"eth0",mode:"bridge",
  capabilities:{ips:true,mac:true},ipam:{type:"sublease",server_socket:$s,provider:$p}}'; }

netns_add "$E2E_ID-a"
c=$(conf v4.default | jq -c '. + {runtimeConfig:{ips:["10.70.0.100/24"]}}')
cni "$CNI_PLUGINS/macvlan" ADD ca "$E2E_ID-a" net1 "$c" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "ADD with runtimeConfig.ips ($OUT $(cat "$E2E_DIR/cni.stderr"))"
expect_contains "$(ip -n "$E2E_ID-a" -4 addr show net1)" "inet 10.70.0.100/24" "static address from runtimeConfig.ips"
pass "runtimeConfig.ips gives the requested address"

netns_add "$E2E_ID-b"
cni "$CNI_PLUGINS/macvlan" ADD cb "$E2E_ID-b" net1 "$(conf v4.default)" "$host" "IgnoreUnknown=1;IP=10.70.0.200"
expect_eq "$RC" 0 "ADD with CNI_ARGS IP= ($OUT $(cat "$E2E_DIR/cni.stderr"))"
expect_contains "$(ip -n "$E2E_ID-b" -4 addr show net1)" "inet 10.70.0.200/24" "static address from CNI_ARGS IP="
pass "CNI_ARGS IP= gives the requested address"

netns_add "$E2E_ID-c"
cni "$CNI_PLUGINS/macvlan" ADD cc "$E2E_ID-c" net1 "$(conf v4.default)" "$host" "IgnoreUnknown=1;IP=10.70.0.100"
[ "$RC" -ne 0 ] || fail "a static address held by another container must be refused"
expect_contains "$OUT" "ca" "the error names the holder"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select count(*) from leases where container_id = 'cc'")" 0 "no lease for the refused ADD"
# Debian's macvlan 1.1.1 leaves its link behind when IPAM fails; a runtime follows a
# failed ADD with DEL (CNI spec), which must succeed and clean up.
cni "$CNI_PLUGINS/macvlan" DEL cc "$E2E_ID-c" net1 "$(conf v4.default)" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "DEL after the failed ADD ($OUT)"
ip -n "$E2E_ID-c" link show net1 >/dev/null 2>&1 && fail "net1 left behind after DEL"
pass "a static address in use is refused and names its holder"

netns_add "$E2E_ID-d"
cni "$CNI_PLUGINS/macvlan" ADD cd "$E2E_ID-d" net1 "$(conf v4.default)" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "dynamic ADD ($OUT)"
expect_contains "$(ip -n "$E2E_ID-d" -4 addr show net1)" "inet 10.70.0.10/24" "first dynamic address after the gateway and excludeIps"

netns_add "$E2E_ID-e"
cni "$CNI_PLUGINS/macvlan" ADD ce "$E2E_ID-e" net1 "$(conf dual.default)" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "dual-stack ADD ($OUT $(cat "$E2E_DIR/cni.stderr"))"
expect_eq "$(json_get "$OUT" '[.ips[].address] | join(" ")')" "10.71.0.2/24 fd00:71::2/120" "dual-stack result"
expect_contains "$(ip -n "$E2E_ID-e" -4 addr show net1)" "inet 10.71.0.2/24" "IPv4 half inside the namespace"
expect_contains "$(ip -n "$E2E_ID-e" -6 addr show net1)" "inet6 fd00:71::2/120" "IPv6 half inside the namespace"
pass "a dual-stack Subnet gives one address of each family"

for x in a b d e; do
  cni "$CNI_PLUGINS/macvlan" DEL "c$x" "$E2E_ID-$x" net1 "$(conf $([ $x = e ] && echo dual || echo v4).default)" "$host" "IgnoreUnknown=1"
  expect_eq "$RC" 0 "DEL c$x ($OUT)"
done
expect_eq "$(live_leases)" 0 "every lease released"
pass "all leases released after DEL"
