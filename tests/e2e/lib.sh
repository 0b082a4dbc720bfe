# Shared helpers for the end-to-end tests: a daemon of our own, network namespaces of
# our own, the real CNI plugins from Debian's containernetworking-plugins.
#
# Each test sources this file, calls e2e_setup, and everything it creates (namespaces,
# veths, the daemon, temp files) is removed by the EXIT trap, pass or fail. Traffic
# stays inside the namespaces the test makes. Every wait is bounded.
set -euo pipefail

: "${SUBLEASE_BIN:?set SUBLEASE_BIN to the bin directory of the build}"
CNI_PLUGINS=${CNI_PLUGINS:-/usr/lib/cni}
E2E_ID="sl$$"
E2E_DIR=""
E2E_DAEMON_PID=""
E2E_NETNS=()
E2E_FAILED=0

fail() { echo "FAIL: $*" >&2; E2E_FAILED=1; exit 1; }
pass() { echo "ok: $*"; }

e2e_cleanup() {
  local rc=$?
  if [ -n "$E2E_DAEMON_PID" ] && kill -0 "$E2E_DAEMON_PID" 2>/dev/null; then
    kill -TERM "$E2E_DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$E2E_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$E2E_DAEMON_PID" 2>/dev/null || true
  fi
  for ns in "${E2E_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ $rc -ne 0 ] && [ -n "$E2E_DIR" ] && [ -f "$E2E_DIR/daemon.log" ]; then
    echo "--- daemon log ---" >&2; tail -n 50 "$E2E_DIR/daemon.log" >&2
  fi
  [ -n "$E2E_DIR" ] && rm -rf "$E2E_DIR"
  exit $rc
}

e2e_require_root() {
  [ "$(id -u)" -eq 0 ] || fail "end-to-end tests need root (network namespaces); run scripts/test.sh as root"
  for p in macvlan bridge host-local; do
    [ -x "$CNI_PLUGINS/$p" ] || fail "$CNI_PLUGINS/$p missing: install containernetworking-plugins (scripts/install-deps.sh)"
  done
  command -v sqlite3 >/dev/null || fail "sqlite3 CLI missing (scripts/install-deps.sh)"
  command -v jq >/dev/null || fail "jq missing (scripts/install-deps.sh)"
}

e2e_setup() {
  e2e_require_root
  E2E_DIR=$(mktemp -d /tmp/sublease-e2e.XXXXXX)
  trap e2e_cleanup EXIT
}

# netns_add NAME: creates a namespace that the trap removes.
netns_add() {
  ip netns add "$1"
  E2E_NETNS+=("$1")
  ip -n "$1" link set lo up
}

# host_ns_with_eth0 NAME: a stand-in "host" namespace whose eth0 is one end of a veth
# pair (the other end, eth0peer, stays in the same namespace), so macvlan has a master
# named eth0 as the seed's NAD expects, and the machine's real eth0 is never touched.
host_ns_with_eth0() {
  netns_add "$1"
  ip -n "$1" link add eth0 type veth peer name eth0peer
  ip -n "$1" link set eth0 up
  ip -n "$1" link set eth0peer up
}

# write_subnet FILE NAME PROVIDER CIDR [GATEWAY] [EXCLUDE...]
write_subnet() {
  local file=$1 name=$2 provider=$3 cidr=$4 gw=${5:-}
  shift 5 || shift $#
  {
    echo "apiVersion: kubeovn.io/v1"
    echo "kind: Subnet"
    echo "metadata:"
    echo "  name: $name"
    echo "spec:"
    echo "  provider: $provider"
    echo "  cidrBlock: \"$cidr\""
    [ -n "$gw" ] && echo "  gateway: \"$gw\""
    if [ $# -gt 0 ]; then
      echo "  excludeIps:"
      for e in "$@"; do echo "  - \"$e\""; done
    fi
    echo "---"
  } >>"$file"
}

# start_daemon SUBNETS_PATH [extra flags...]: starts subleased, waits for its socket.
start_daemon() {
  local subnets=$1
  shift
  SOCK="$E2E_DIR/sublease.sock"
  DB="$E2E_DIR/sublease.db"
  "$SUBLEASE_BIN/subleased" --standalone --subnets "$subnets" --socket "$SOCK" --db "$DB" \
    --metrics-address "" "$@" >"$E2E_DIR/daemon.log" 2>&1 &
  E2E_DAEMON_PID=$!
  for _ in $(seq 1 100); do
    [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://x/v1/cni/status >/dev/null 2>&1 && return 0
    kill -0 "$E2E_DAEMON_PID" 2>/dev/null || fail "subleased exited: $(cat "$E2E_DIR/daemon.log")"
    sleep 0.1
  done
  fail "subleased did not become ready within 10 s"
}

stop_daemon() {
  [ -n "$E2E_DAEMON_PID" ] || return 0
  kill -TERM "$E2E_DAEMON_PID"
  for _ in $(seq 1 100); do kill -0 "$E2E_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$E2E_DAEMON_PID" 2>/dev/null && fail "subleased did not stop within 10 s of SIGTERM"
  wait "$E2E_DAEMON_PID" 2>/dev/null || true
  E2E_DAEMON_PID=""
}

# cni PLUGIN CMD CONTAINER_ID NETNS IFNAME CONFIG [HOSTNS] [CNI_ARGS]: runs a real plugin
# as a runtime would (in HOSTNS when given); stdout to $OUT, exit code to $RC.
cni() {
  local plugin=$1 cmd=$2 cid=$3 netns=$4 ifname=$5 config=$6 hostns=${7:-} args=${8:-}
  local prefix=()
  [ -n "$hostns" ] && prefix=(ip netns exec "$hostns")
  local netns_path=""
  [ -n "$netns" ] && netns_path="/var/run/netns/$netns"
  set +e
  OUT=$(printf '%s' "$config" | env CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" CNI_NETNS="$netns_path" \
    CNI_IFNAME="$ifname" CNI_PATH="$SUBLEASE_BIN:$CNI_PLUGINS" CNI_ARGS="$args" \
    "${prefix[@]}" "$plugin" 2>"$E2E_DIR/cni.stderr")
  RC=$?
  set -e
}

# json_get JSON JQ_FILTER: one value out of a JSON document (raw strings).
json_get() { printf '%s' "$1" | jq -r "$2"; }

# live_leases: number of live leases in the daemon's database (read-only, WAL).
live_leases() { sqlite3 "file:$DB?mode=ro" "select count(*) from leases where state <> 'released'"; }

expect_eq() { [ "$1" == "$2" ] || fail "$3: expected '$2', got '$1'"; }
expect_contains() { case "$1" in *"$2"*) ;; *) fail "$3: '$1' does not contain '$2'" ;; esac; }
