#!/usr/bin/env bash
# Disk full and read-only database, at the CNI level (standalone daemon, real plugin).
#
# The daemon's database lives on a 1 MiB tmpfs of the test's own. While the disk is
# full, a new ADD fails with a message that says so and that nothing was written, a
# repeated ADD for a lease held before is still served, a DEL that cannot be written
# fails (so the runtime retries it) and keeps the lease, and the database holds exactly
# what was answered. Once space is freed, everything works with no restart. A database
# on a read-only mount is refused at start with a clear message and is not moved aside
# as corrupt. Needs root (mount). Everything is unmounted and removed by the EXIT trap.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../e2e/lib.sh"

e2e_setup
MNT="$E2E_DIR/disk"
mkdir -p "$MNT"
mount -t tmpfs -o size=1m,mode=0755 sublease-faults "$MNT"
fault_cleanup() {
  local rc=$?
  if [ -n "$E2E_DAEMON_PID" ]; then
    kill -KILL "$E2E_DAEMON_PID" 2>/dev/null || true
    wait "$E2E_DAEMON_PID" 2>/dev/null || true
    E2E_DAEMON_PID=""
  fi
  umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  return $rc
}
trap 'fault_cleanup; e2e_cleanup' EXIT

SUBNETS="$E2E_DIR/subnets.yaml"
write_subnet "$SUBNETS" disk disk.default 10.72.0.0/24
SOCK="$E2E_DIR/sublease.sock"
DB="$MNT/sublease.db"

start() {
  "$SUBLEASE_BIN/subleased" --standalone --subnets "$SUBNETS" --socket "$SOCK" --db "$DB" \
    --metrics-address "" >>"$E2E_DIR/daemon.log" 2>&1 &
  E2E_DAEMON_PID=$!
  for _ in $(seq 1 100); do
    [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://x/v1/cni/status >/dev/null 2>&1 && return 0
    kill -0 "$E2E_DAEMON_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  fail "subleased did not become ready within 10 s"
}

CONF='{"cniVersion":"1.0.0","name":"disk","type":"macvlan","ipam":{"type":"kube-ovn","server_socket":"'"$SOCK"'","provider":"disk.default"}}'
# ipam CMD CONTAINER: the IPAM plugin as macvlan calls it (no interface is made, so the
# test's own network namespace stands in); stdout to $OUT, exit code to $RC.
ipam() {
  set +e
  OUT=$(printf '%s' "$CONF" | env CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/proc/self/ns/net \
    CNI_IFNAME=net1 CNI_PATH="$SUBLEASE_BIN" CNI_ARGS="" "$SUBLEASE_BIN/sublease" 2>"$E2E_DIR/cni.stderr")
  RC=$?
  set -e
}
addr() { json_get "$OUT" '.ips[0].address'; }
history_of() { sqlite3 "file:$DB?mode=ro" "select count(*) from lease_history where container_id = '$1'"; }

start || fail "subleased exited: $(cat "$E2E_DIR/daemon.log")"
ipam ADD c1; expect_eq "$RC" 0 "ADD c1"; A1=$(addr)
ipam ADD c2; expect_eq "$RC" 0 "ADD c2"; A2=$(addr)
pass "two leases before the disk fills: $A1 $A2"

# Fill the disk. dd stops at ENOSPC; the filler is removed to free the space again.
dd if=/dev/zero of="$MNT/filler" bs=4k >/dev/null 2>&1 || true
[ "$(df --output=avail "$MNT" | tail -1 | tr -d ' ')" -eq 0 ] || fail "the tmpfs is not full"

# New allocations fail with a message a person can act on; several, in case the first
# fits into already-allocated WAL space.
FAILED=""
for i in $(seq 3 12); do
  ipam ADD "c$i"
  if [ "$RC" -ne 0 ]; then FAILED="c$i"; break; fi
done
[ -n "$FAILED" ] || fail "ADDs kept succeeding on a full disk"
expect_contains "$OUT" "full" "ADD $FAILED on a full disk"
expect_contains "$OUT" "nothing was written" "ADD $FAILED on a full disk"
expect_contains "$OUT" "$MNT" "ADD $FAILED names the directory"
pass "ADD $FAILED on a full disk: $(json_get "$OUT" '.msg'): $(json_get "$OUT" '.details')"

# Existing leases are still served, from memory.
ipam ADD c1; expect_eq "$RC" 0 "repeated ADD c1 on a full disk"; expect_eq "$(addr)" "$A1" "repeated ADD c1"
pass "a repeated ADD is served with the disk full"

# A DEL that cannot be recorded fails (the runtime retries it) and keeps the lease.
ipam DEL c2
if [ "$RC" -ne 0 ]; then
  expect_contains "$OUT" "full" "DEL c2 on a full disk"
  DEL_FAILED=1
  pass "DEL c2 on a full disk fails and keeps the lease: $(json_get "$OUT" '.details')"
else
  DEL_FAILED=0
  pass "DEL c2 fitted into the WAL's free space"
fi

# Nothing half-written: the database holds exactly what was answered. Read it with the
# daemon stopped (a reader on a full disk may not be able to create its own -shm).
kill -KILL "$E2E_DAEMON_PID"; wait "$E2E_DAEMON_PID" 2>/dev/null || true; E2E_DAEMON_PID=""
rm -f "$MNT/filler"
expect_eq "$(history_of "$FAILED")" 0 "history rows of the failed ADD $FAILED"
expect_eq "$(sqlite3 "file:$DB?mode=ro" "select count(*) from leases where container_id = '$FAILED'")" 0 \
  "lease rows of the failed ADD $FAILED"
LIVE=$(sqlite3 "file:$DB?mode=ro" "select group_concat(container_id, ',') from (select container_id from leases where state <> 'released' order by container_id)")
ANSWERED=$(for i in $(seq 1 $(( ${FAILED#c} - 1 ))); do echo "c$i"; done | LC_ALL=C sort | paste -sd,)
[ "$DEL_FAILED" -eq 0 ] && ANSWERED=$(echo "$ANSWERED" | tr ',' '\n' | grep -vx c2 | paste -sd,)
expect_eq "$LIVE" "$ANSWERED" "live leases after kill -9 on a full disk"
expect_eq "$(sqlite3 "file:$DB?mode=ro" 'pragma integrity_check')" "ok" "integrity after the full disk"
pass "the database holds exactly the answered leases ($LIVE), integrity ok"

# Space again: allocation works, the retried DEL goes through.
start || fail "subleased exited after space was freed: $(tail -5 "$E2E_DIR/daemon.log")"
ipam ADD "$FAILED"; expect_eq "$RC" 0 "ADD $FAILED after freeing space"
case "$(addr)" in "$A1"|"$A2") fail "ADD $FAILED got a held address $(addr)" ;; esac
ipam DEL c2; expect_eq "$RC" 0 "DEL c2 after freeing space"
ipam ADD c1; expect_eq "$(addr)" "$A1" "c1 kept its address through it all"
pass "after freeing space: ADD and DEL work, c1 kept $A1"

# Read-only: the daemon refuses to start on a read-only mount, says why, moves nothing.
stop_daemon
mount -o remount,ro "$MNT"
if start; then fail "subleased started on a read-only database"; fi
wait "$E2E_DAEMON_PID" 2>/dev/null || true
E2E_DAEMON_PID=""
LOGTAIL=$(tail -3 "$E2E_DIR/daemon.log")
expect_contains "$LOGTAIL" "read-only" "start on a read-only mount"
ls "$MNT" | grep -q corrupt && fail "a read-only database was moved aside as corrupt"
pass "read-only mount: refused at start ($(tail -1 "$E2E_DIR/daemon.log"))"
mount -o remount,rw "$MNT"
start || fail "subleased did not start once the mount was writable again"
ipam ADD c1; expect_eq "$(addr)" "$A1" "c1 after the read-only episode"
pass "writable again: leases intact"
