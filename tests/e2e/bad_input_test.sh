#!/usr/bin/env bash
# Bad input through the real plugin process: each gets the right CNI error code and a
# message a person can act on, and leaves no lease behind.
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" tiny tiny.default 10.74.0.0/30 10.74.0.1
start_daemon "$subnets"
netns_add "$E2E_ID-pod"
P="$SUBLEASE_BIN/sublease"
conf() { jq -nc --arg s "$SOCK" --arg p "${1:-tiny.default}" '{cniVersion:"1.0.0",name:"n",type:"macvlan",ipam:{type:"sublease",server_socket:$s,provider:$p}}'; }
code() { json_get "$OUT" '.code'; }
msg() { json_get "$OUT" '.msg + " " + (.details // "")'; }

cni "$P" ADD c1 "$E2E_ID-pod" net1 '{"cniVersion":"1.0.0", "name": '
[ "$RC" -ne 0 ] || fail "malformed JSON accepted"
expect_eq "$(code)" 6 "malformed JSON -> decode error"

cni "$P" ADD c1 "$E2E_ID-pod" net1 "$(conf | jq -c 'del(.ipam.provider)')"
expect_eq "$(code)" 7 "missing provider -> bad config"
expect_contains "$(msg)" "provider" "message names the key"

cni "$P" ADD c1 "$E2E_ID-pod" net1 "$(conf | jq -c 'del(.ipam.server_socket)')"
expect_eq "$(code)" 7 "missing server_socket -> bad config"
expect_contains "$(msg)" "server_socket" "message names the key"

cni "$P" ADD c1 "$E2E_ID-pod" net1 "$(conf | jq -c '.ipam.provider = 5')"
expect_eq "$(code)" 7 "provider of the wrong type -> bad config"

cni "$P" ADD "" "$E2E_ID-pod" net1 "$(conf)"
expect_eq "$(code)" 4 "missing CNI_CONTAINERID -> bad environment"
expect_contains "$(msg)" "CNI_CONTAINERID" "message names the variable"

cni "$P" ADD c1 "$E2E_ID-pod" net1 "$(conf nobody.default)"
expect_eq "$(code)" 7 "unknown provider -> bad config"
expect_contains "$(msg)" "nobody.default" "message names the provider"
expect_eq "$(live_leases)" 0 "no lease after bad requests"
pass "malformed JSON, missing keys, wrong types, bad env and unknown provider are refused"

# A /30 with its gateway excluded holds exactly one address.
cni "$P" ADD c1 "$E2E_ID-pod" net1 "$(conf)"
expect_eq "$RC" 0 "the one free address ($OUT)"
cni "$P" ADD c2 "$E2E_ID-pod" net1 "$(conf)"
expect_eq "$(code)" 100 "exhausted subnet"
expect_contains "$(msg)" "tiny" "exhaustion message names the subnet"
expect_eq "$(live_leases)" 1 "the failed ADD left no lease"
pass "an exhausted subnet gives code 100 and no lease"

cni "$P" ADD c3 "$E2E_ID-pod" net1 "$(conf | jq -c '.runtimeConfig = {ips: ["10.99.0.5"]}')"
[ "$RC" -ne 0 ] || fail "an address outside the subnet was accepted"
expect_contains "$(msg)" "10.99.0.5" "message names the address"
expect_eq "$(live_leases)" 1 "no lease for the out-of-subnet request"
pass "a static address outside the subnet is refused"

stop_daemon
cni "$P" ADD c4 "$E2E_ID-pod" net1 "$(conf)"
expect_eq "$(code)" 11 "daemon down -> try again later"
expect_contains "$(msg)" "$SOCK" "message names the socket"
cni "$P" DEL c4 "$E2E_ID-pod" net1 "$(conf)"
expect_eq "$(code)" 11 "DEL with the daemon down asks the runtime to retry"
pass "daemon down gives code 11 naming the socket"
