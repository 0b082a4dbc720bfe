#!/usr/bin/env bash
# The same IPAM under the real bridge plugin: two containers on one bridge get
# distinct addresses and can reach each other (traffic stays inside our namespaces).
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" br br.default 10.72.0.0/24 10.72.0.1
start_daemon "$subnets"
host="$E2E_ID-host"
netns_add "$host"
conf=$(jq -nc --arg s "$SOCK" '{cniVersion:"1.0.0",name:"br",type:"bridge",bridge:"slbr0",isGateway:false,
  ipam:{type:"sublease",server_socket:$s,provider:"br.default"}}')
for x in 1 2; do
  netns_add "$E2E_ID-p$x"
  cni "$CNI_PLUGINS/bridge" ADD "cbr$x" "$E2E_ID-p$x" eth1 "$conf" "$host" "IgnoreUnknown=1"
  expect_eq "$RC" 0 "bridge ADD $x ($OUT $(cat "$E2E_DIR/cni.stderr"))"
done
expect_contains "$(ip -n "$E2E_ID-p1" -4 addr show eth1)" "inet 10.72.0.2/24" "first container"
expect_contains "$(ip -n "$E2E_ID-p2" -4 addr show eth1)" "inet 10.72.0.3/24" "second container"
ip netns exec "$E2E_ID-p1" ping -c 1 -W 2 10.72.0.3 >/dev/null || fail "containers on the bridge cannot reach each other"
pass "bridge containers get distinct addresses and reach each other"
for x in 1 2; do
  cni "$CNI_PLUGINS/bridge" DEL "cbr$x" "$E2E_ID-p$x" eth1 "$conf" "$host" "IgnoreUnknown=1"
  expect_eq "$RC" 0 "bridge DEL $x ($OUT)"
done
expect_eq "$(live_leases)" 0 "leases released"
pass "bridge DEL releases"
