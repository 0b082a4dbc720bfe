#!/usr/bin/env bash
# 50 parallel ADDs for different containers, each through the real plugin process,
# get 50 distinct addresses, and the database agrees.
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" par par.default 10.73.0.0/24 10.73.0.1
start_daemon "$subnets"
netns_add "$E2E_ID-pod"
conf=$(jq -nc --arg s "$SOCK" '{cniVersion:"1.0.0",name:"par",type:"macvlan",ipam:{type:"sublease",server_socket:$s,provider:"par.default"}}')
mkdir -p "$E2E_DIR/out"
pids=()
for i in $(seq 1 50); do
  printf '%s' "$conf" | CNI_COMMAND=ADD CNI_CONTAINERID="par-$i" CNI_NETNS="/var/run/netns/$E2E_ID-pod" \
    CNI_IFNAME=net1 CNI_PATH=/usr/lib/cni timeout 30 "$SUBLEASE_BIN/sublease" >"$E2E_DIR/out/$i.json" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || true  # (a bare `wait` would also wait for the daemon)
addresses=$(for i in $(seq 1 50); do jq -r '.ips[0].address' "$E2E_DIR/out/$i.json" || cat "$E2E_DIR/out/$i.json"; done)
expect_eq "$(printf '%s\n' "$addresses" | grep -c '^10\.73\.0\.[0-9]*/24$')" 50 "50 results with an address"
expect_eq "$(printf '%s\n' "$addresses" | sort -u | wc -l)" 50 "50 distinct addresses"
expect_eq "$(live_leases)" 50 "50 live leases in the database"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select count(distinct address) from leases where state <> 'released'")" 50 "distinct in the database"
pass "50 parallel ADDs get 50 distinct addresses"
