#!/usr/bin/env bash
# subleasectl against a running standalone daemon: leases, usage, history and release
# while the daemon writes (WAL), -o json read with jq and -o yaml with python3-yaml.
# release goes through the daemon's socket: afterwards the daemon itself (CNI CHECK)
# no longer knows the lease. Bounded waits; the EXIT trap stops the daemon.
set -euo pipefail
: "${SUBLEASE_BIN:?set SUBLEASE_BIN to the bin directory of the build}"
fail() { echo "FAIL: $*" >&2; exit 1; }
for t in jq curl python3; do command -v "$t" >/dev/null || fail "$t missing (scripts/install-deps.sh)"; done
dir=$(mktemp -d /tmp/sublease-ctl.XXXXXX)
pid=""
cleanup() {
  local rc=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ $rc -ne 0 ] && [ -f "$dir/daemon.log" ] && { echo "--- daemon log ---" >&2; tail -n 30 "$dir/daemon.log" >&2; }
  rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT

cat >"$dir/subnet.yaml" <<'YAML'
apiVersion: kubeovn.io/v1
kind: Subnet
metadata: {name: ctl}
spec: {provider: ctl.default, cidrBlock: 10.77.0.0/24, gateway: 10.77.0.1}
YAML
sock="$dir/s.sock"
db="$dir/s.db"
"$SUBLEASE_BIN/subleased" --standalone --subnets "$dir/subnet.yaml" --socket "$sock" --db "$db" \
  --metrics-address "" >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf --max-time 2 --unix-socket "$sock" http://x/v1/cni/status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "subleased exited"; sleep 0.1
done

conf=$(jq -nc --arg s "$sock" '{cniVersion:"1.0.0",name:"ctl",ipam:{type:"sublease",server_socket:$s,provider:"ctl.default"}}')
cni() {  # cni COMMAND CONTAINER [POD]
  local args=""
  [ -n "${3:-}" ] && args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3"
  printf '%s' "$conf" | env CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/proc/self/ns/net \
    CNI_IFNAME=net1 CNI_PATH="$SUBLEASE_BIN" CNI_ARGS="$args" "$SUBLEASE_BIN/sublease"
}
ctl() { "$SUBLEASE_BIN/subleasectl" --db "$db" "$@"; }

cni ADD c-web0 web-0 >/dev/null || fail "ADD web-0"
cni ADD c-web1 web-1 >/dev/null || fail "ADD web-1"
cni ADD c-bare >/dev/null || fail "ADD without a pod"

[ "$(ctl -o json leases | jq '.items | length')" = 3 ] || fail "leases: $(ctl leases)"
[ "$(ctl -o json leases --pod default/web-1 | jq -r '.items[0].address')" = 10.77.0.3 ] || fail "--pod"
[ "$(ctl -o json leases --address 10.77.0.4 | jq -r '.items[0].container_id')" = c-bare ] || fail "--address"
[ "$(ctl -o json leases --subnet other | jq '.items | length')" = 0 ] || fail "--subnet"
ctl leases | head -1 | grep -q '^SUBNET .*ADDRESS' || fail "table header: $(ctl leases)"
echo "ok: leases and filters"

u=$(ctl -o json usage)
[ "$(echo "$u" | jq '.items[0].used')" = 3 ] || fail "usage used: $u"
[ "$(echo "$u" | jq -r '.items[0].free')" = 250 ] || fail "usage free: $u"
ctl usage | grep -q 'ctl .*IPv4 .*\[#\.*\] 1\.2%' || fail "usage bar: $(ctl usage)"
ctl -o yaml usage | python3 -c 'import sys, yaml; d = yaml.safe_load(sys.stdin); assert d["kind"] == "SubnetUsageList" and d["items"][0]["used"] == 3, d' \
  || fail "yaml"
echo "ok: usage (table bar, json, yaml)"

cni DEL c-web0 web-0 >/dev/null || fail "DEL web-0"
h=$(ctl -o json history 10.77.0.2)
[ "$(echo "$h" | jq -r '[.items[].event] | join(",")')" = "released,committed,allocated" ] || fail "history: $h"
[ "$(echo "$h" | jq -r '.items[0].pod')" = default/web-0 ] || fail "history pod: $h"
echo "ok: history"

out=$(ctl release --address 10.77.0.3 --socket "$sock") || fail "release: $out"
echo "$out" | grep -q "released 10.77.0.3" || fail "release output: $out"
if cni CHECK c-web1 web-1 >/dev/null 2>&1; then fail "the daemon still holds web-1's lease after release"; fi
[ "$(ctl -o json leases | jq '.items | length')" = 1 ] || fail "after release: $(ctl leases)"
set +e
ctl release --address 10.77.0.99 --socket "$sock" 2>/dev/null; rc=$?
ctl verify 2>/dev/null; vrc=$?
set -e
[ $rc -eq 1 ] || fail "release of nothing exits $rc, want 1"
[ $vrc -eq 2 ] || fail "verify without --node-name exits $vrc, want 2"
# The address is free again: the next ADD gets the lowest free one, 10.77.0.2.
[ "$(cni ADD c-new new | jq -r '.ips[0].address')" = 10.77.0.2/24 ] || fail "re-allocation"
echo "ok: release through the daemon; exit codes"
