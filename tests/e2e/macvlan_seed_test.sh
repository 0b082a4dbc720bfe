#!/usr/bin/env bash
# The seed, end to end: Kube-OVN's Subnet and NAD verbatim (plus the `name` Multus adds),
# the real macvlan plugin in network namespaces, sublease installed as `kube-ovn` and
# listening on Kube-OVN's socket path. The pod gets the first address after excludeIps,
# DEL removes it and releases the lease, CHECK verifies it.
. "$(dirname "$0")/lib.sh"
e2e_setup
kube_ovn_sock=/run/openvswitch/kube-ovn-daemon.sock
if [ -S "$kube_ovn_sock" ] && curl -s --max-time 1 --unix-socket "$kube_ovn_sock" http://x/ >/dev/null 2>&1; then
  fail "$kube_ovn_sock is in use by another server; this test needs it"
fi
start_daemon "$(dirname "$0")/../../packaging/examples/seed-subnet.yaml" --socket "$kube_ovn_sock"
[ -S "$kube_ovn_sock" ] || fail "daemon does not listen on $kube_ovn_sock"
host="$E2E_ID-host"; pod="$E2E_ID-pod"
host_ns_with_eth0 "$host"
netns_add "$pod"
# The seed's NAD config, verbatim, with the name Multus fills in.
nad='{
      "cniVersion": "0.3.0",
      "type": "macvlan",
      "master": "eth0",
      "mode": "bridge",
      "ipam": {
        "type": "kube-ovn",
        "server_socket": "/run/openvswitch/kube-ovn-daemon.sock",
        "provider": "macvlan.default"
      }
    }'
nad=$(printf '%s' "$nad" | jq -c '. + {name: "macvlan"}')
args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=samplepod;K8S_POD_INFRA_CONTAINER_ID=c-seed;K8S_POD_UID=uid-1"

cni "$CNI_PLUGINS/macvlan" ADD c-seed "$pod" net1 "$nad" "$host" "$args"
expect_eq "$RC" 0 "macvlan ADD exit code ($OUT $(cat "$E2E_DIR/cni.stderr"))"
expect_eq "$(json_get "$OUT" '.ips[0].address')" "172.17.0.11/16" "result address"
expect_eq "$(json_get "$OUT" '.ips[0].gateway')" "172.17.0.1" "result gateway"
expect_contains "$(ip -n "$pod" -4 addr show net1)" "inet 172.17.0.11/16" "address inside the pod namespace"
expect_eq "$(ip -n "$pod" route show default)" "" "no default route on net1 unless asked"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select address, state, pod_namespace || '/' || pod_name from leases_view")" \
  "172.17.0.11|committed|default/samplepod" "leases_view"
pass "ADD gives 172.17.0.11/16 inside the namespace"

# A second pod gets the next address.
netns_add "$pod-2"
cni "$CNI_PLUGINS/macvlan" ADD c-seed-2 "$pod-2" net1 "$nad" "$host" "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=samplepod-2"
expect_eq "$RC" 0 "second ADD ($OUT)"
expect_contains "$(ip -n "$pod-2" -4 addr show net1)" "inet 172.17.0.12/16" "second pod's address"

# CHECK exists from CNI 0.4.0: the same NAD at 1.0.0 with the ADD's result as prevResult.
nad1=$(printf '%s' "$nad" | jq -c '.cniVersion = "1.0.0"')
cni "$CNI_PLUGINS/macvlan" ADD c-check "$pod-2" net2 "$nad1" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "1.0.0 ADD ($OUT)"
check_conf=$(printf '%s' "$nad1" | jq -c --argjson prev "$OUT" '. + {prevResult: $prev}')
cni "$CNI_PLUGINS/macvlan" CHECK c-check "$pod-2" net2 "$check_conf" "$host" "IgnoreUnknown=1"
expect_eq "$RC" 0 "CHECK of a healthy attachment ($OUT $(cat "$E2E_DIR/cni.stderr"))"
pass "CHECK succeeds for a live attachment"

cni "$CNI_PLUGINS/macvlan" DEL c-seed "$pod" net1 "$nad" "$host" "$args"
expect_eq "$RC" 0 "macvlan DEL ($OUT)"
ip -n "$pod" link show net1 >/dev/null 2>&1 && fail "net1 still exists after DEL"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select count(*) from leases where address_text = '172.17.0.11' and state <> 'released'")" 0 "lease released"
cni "$CNI_PLUGINS/macvlan" DEL c-seed "$pod" net1 "$nad" "$host" "$args"
expect_eq "$RC" 0 "second DEL is idempotent ($OUT)"
pass "DEL removes the interface, releases the lease, and is idempotent"

stop_daemon
[ -e "$kube_ovn_sock" ] && fail "socket file left behind after SIGTERM"
pass "SIGTERM removes the sockets"
