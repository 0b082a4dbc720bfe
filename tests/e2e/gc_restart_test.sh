#!/usr/bin/env bash
# CNI GC releases what the runtime no longer lists; CHECK fails for an attachment that
# holds nothing; a daemon killed with SIGKILL comes back with every committed lease.
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" gcnet gc.default 10.75.0.0/24 10.75.0.1
start_daemon "$subnets"
netns_add "$E2E_ID-pod"
P="$SUBLEASE_BIN/sublease"
conf=$(jq -nc --arg s "$SOCK" '{cniVersion:"1.1.0",name:"gcnet",type:"macvlan",ipam:{type:"sublease",server_socket:$s,provider:"gc.default"}}')
for c in keep1 keep2 gone1 gone2; do
  cni "$P" ADD "$c" "$E2E_ID-pod" net1 "$conf"
  expect_eq "$RC" 0 "ADD $c ($OUT)"
done
keep1=$(sqlite3 "file:$DB?mode=ro" "select address_text from leases where container_id='keep1' and state <> 'released'")

gc_conf=$(printf '%s' "$conf" | jq -c '. + {"cni.dev/valid-attachments": [{containerID:"keep1",ifname:"net1"},{containerID:"keep2",ifname:"net1"}]}')
cni "$P" GC "" "" "" "$gc_conf"
expect_eq "$RC" 0 "GC ($OUT $(cat "$E2E_DIR/cni.stderr"))"
expect_eq "$(live_leases)" 2 "GC left the two listed attachments"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select group_concat(container_id, ',') from (select container_id from leases where state <> 'released' order by container_id)")" "keep1,keep2" "the kept ones"
pass "GC releases unlisted attachments only"

prev=$(jq -nc --arg a "$keep1/24" '{cniVersion:"1.1.0",ips:[{address:$a,gateway:"10.75.0.1"}]}')
cni "$P" CHECK keep1 "$E2E_ID-pod" net1 "$(printf '%s' "$conf" | jq -c --argjson p "$prev" '. + {prevResult:$p}')"
expect_eq "$RC" 0 "CHECK of a kept lease ($OUT)"
cni "$P" CHECK gone1 "$E2E_ID-pod" net1 "$(printf '%s' "$conf" | jq -c --argjson p "$prev" '. + {prevResult:$p}')"
[ "$RC" -ne 0 ] || fail "CHECK of a released attachment succeeded"
pass "CHECK passes for a live lease and fails for a released one"

cni "$P" STATUS "" "" "" "$conf"
expect_eq "$RC" 0 "STATUS with the daemon up ($OUT)"

kill -KILL "$E2E_DAEMON_PID"; wait "$E2E_DAEMON_PID" 2>/dev/null || true; E2E_DAEMON_PID=""
cni "$P" STATUS "" "" "" "$conf"
expect_eq "$(json_get "$OUT" '.code')" 50 "STATUS with the daemon down"
start_daemon "$subnets"
cni "$P" ADD keep1 "$E2E_ID-pod" net1 "$conf"
expect_eq "$(json_get "$OUT" '.ips[0].address')" "$keep1/24" "keep1 keeps its address across SIGKILL"
cni "$P" ADD new1 "$E2E_ID-pod" net1 "$conf"
expect_eq "$RC" 0 "ADD after restart ($OUT)"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select count(*) - count(distinct address) from leases where state <> 'released'")" 0 "no duplicate after restart"
expect_eq "$(live_leases)" 3 "two survivors and one new lease"
pass "SIGKILL loses no committed lease and creates no duplicate"
