#!/usr/bin/env bash
# The daemon as an operator sees it: systemd readiness (sd_notify), health and
# Prometheus metrics on their own TCP listener, the socket's mode, --help, a bad
# configuration refused with a clear message, and a clean stop on SIGTERM.
. "$(dirname "$0")/lib.sh"
e2e_setup
subnets="$E2E_DIR/subnets.yaml"
write_subnet "$subnets" ops ops.default 10.76.0.0/24 10.76.0.1

# --help documents the options; a bad flag and a bad manifest are refused clearly.
help=$("$SUBLEASE_BIN/subleased" --help)
for opt in --standalone --subnets --socket --db --metrics-address --config; do
  expect_contains "$help" "$opt" "--help lists $opt"
done
set +e
err=$("$SUBLEASE_BIN/subleased" --standalone 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "--standalone without --subnets was accepted"
expect_contains "$err" "--subnets" "the error says what is missing"
printf 'apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata: {name: bad}\nspec: {provider: bad.default, cidrBlock: 10.77.0.0/24, excludeIps: ["10.77.0.9..10.77.0.3"]}\n' >"$E2E_DIR/bad.yaml"
set +e
err=$("$SUBLEASE_BIN/subleased" --standalone --subnets "$E2E_DIR/bad.yaml" --socket "$E2E_DIR/bad.sock" \
  --db "$E2E_DIR/bad.db" --metrics-address "" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "an invalid Subnet was accepted"
expect_contains "$err" "10.77.0.9..10.77.0.3" "the error names the bad excludeIps item"
pass "--help, missing flags and invalid Subnets give clear errors"

# sd_notify: a datagram socket stands in for systemd.
notify="$E2E_DIR/notify.sock"
python3 - "$notify" >"$E2E_DIR/notify.out" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(20)
for _ in range(2):
    try: print(s.recv(4096).decode(), flush=True)
    except socket.timeout: break
PY
listener=$!
for _ in $(seq 1 50); do [ -S "$notify" ] && break; sleep 0.1; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SOCK="$E2E_DIR/sublease.sock"; DB="$E2E_DIR/sublease.db"
NOTIFY_SOCKET="$notify" "$SUBLEASE_BIN/subleased" --standalone --subnets "$subnets" --socket "$SOCK" \
  --db "$DB" --metrics-address "127.0.0.1:$port" >"$E2E_DIR/daemon.log" 2>&1 &
E2E_DAEMON_PID=$!
for _ in $(seq 1 100); do grep -q READY=1 "$E2E_DIR/notify.out" 2>/dev/null && break; sleep 0.1; done
expect_contains "$(cat "$E2E_DIR/notify.out")" "READY=1" "systemd readiness"
expect_eq "$(stat -c %a "$SOCK")" 600 "socket mode (root only)"
pass "READY=1 is sent once the socket listens; the socket is 0600"

expect_eq "$(curl -s --max-time 5 "http://127.0.0.1:$port/healthz")" "ok" "/healthz"
expect_eq "$(curl -s --max-time 5 "http://127.0.0.1:$port/readyz")" "ready" "/readyz"
conf=$(jq -nc --arg s "$SOCK" '{cniVersion:"1.0.0",name:"ops",type:"macvlan",ipam:{type:"sublease",server_socket:$s,provider:"ops.default"}}')
netns_add "$E2E_ID-pod"
cni "$SUBLEASE_BIN/sublease" ADD c1 "$E2E_ID-pod" net1 "$conf"
expect_eq "$RC" 0 "ADD ($OUT)"
cni "$SUBLEASE_BIN/sublease" ADD c2 "$E2E_ID-pod" net1 "$(printf '%s' "$conf" | jq -c '.ipam.provider = "none.default"')"
metrics=$(curl -s --max-time 5 "http://127.0.0.1:$port/metrics")
expect_contains "$metrics" 'sublease_requests_total{op="add",code="ok"} 1' "request counter"
expect_contains "$metrics" 'sublease_errors_total{op="add",kind="not_found"} 1' "error counter by kind"
expect_contains "$metrics" 'sublease_leases{subnet="ops",family="ipv4"} 1' "leases per subnet"
expect_contains "$metrics" 'sublease_request_duration_seconds_bucket{op="add",le="+Inf"} 2' "latency histogram"
pass "/healthz, /readyz and /metrics answer on their own listener"

kill -TERM "$E2E_DAEMON_PID"
for _ in $(seq 1 100); do kill -0 "$E2E_DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$E2E_DAEMON_PID" 2>/dev/null && fail "subleased still running 10 s after SIGTERM"
wait "$E2E_DAEMON_PID"; rc=$?
E2E_DAEMON_PID=""
expect_eq "$rc" 0 "exit status after SIGTERM"
[ -e "$SOCK" ] && fail "socket file left after SIGTERM"
expect_contains "$(cat "$E2E_DIR/daemon.log")" "stopped" "clean stop logged (loop closed with no handle left)"
wait "$listener" 2>/dev/null || true
expect_contains "$(cat "$E2E_DIR/notify.out")" "STOPPING=1" "systemd told of the stop"
pass "SIGTERM stops cleanly: exit 0, socket removed, STOPPING=1 sent"
