#!/usr/bin/env bash
# A corrupt database at start, standalone mode: subleased moves it (and its -wal/-shm)
# aside to <db>.corrupt-<UTC time>, says where in its log, starts with a fresh empty
# database (standalone mode has nothing to rebuild from) and allocates again. A
# database written by a newer sublease is refused and left exactly where it is.
# Uses the e2e helpers (root, as the other e2e tests); the EXIT trap cleans up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../e2e/lib.sh"

e2e_setup
SUBNETS="$E2E_DIR/subnets.yaml"
write_subnet "$SUBNETS" corrupt corrupt.default 10.73.0.0/24
start_daemon "$SUBNETS"
CONF='{"cniVersion":"1.0.0","name":"corrupt","type":"macvlan","ipam":{"type":"kube-ovn","server_socket":"'"$SOCK"'","provider":"corrupt.default"}}'
# ipam CMD CONTAINER: the IPAM plugin as macvlan calls it (no interface is made, so the
# test's own network namespace stands in); stdout to $OUT, exit code to $RC.
ipam() {
  set +e
  OUT=$(printf '%s' "$CONF" | env CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/proc/self/ns/net \
    CNI_IFNAME=net1 CNI_PATH="$SUBLEASE_BIN" CNI_ARGS="" "$SUBLEASE_BIN/sublease" 2>"$E2E_DIR/cni.stderr")
  RC=$?
  set -e
}
for c in a b c; do ipam ADD "$c"; expect_eq "$RC" 0 "ADD $c"; done
stop_daemon
expect_eq "$(live_leases)" 3 "leases before the corruption"

# Scribble over the b-tree pages (the header stays, so SQLite opens it and the
# integrity check finds the damage).
SIZE=$(stat -c %s "$DB")
[ "$SIZE" -gt 16384 ] || fail "database unexpectedly small ($SIZE bytes)"
dd if=/dev/urandom of="$DB" bs=4096 seek=2 count=$(( SIZE / 4096 - 2 )) conv=notrunc status=none
cp "$DB" "$E2E_DIR/corrupt-copy"

start_daemon "$SUBNETS"
ASIDE=$(ls "$DB".corrupt-* 2>/dev/null | grep -v -- '-wal$\|-shm$' | head -1)
[ -n "$ASIDE" ] || fail "no $DB.corrupt-* file: $(ls "$E2E_DIR")"
cmp -s "$ASIDE" "$E2E_DIR/corrupt-copy" || fail "the file moved aside is not the corrupt database as found"
expect_contains "$(cat "$E2E_DIR/daemon.log")" "moved aside (kept for inspection): $DB -> $ASIDE" "the log says where"
expect_contains "$(cat "$E2E_DIR/daemon.log")" "starts empty" "the log says standalone starts empty"
expect_eq "$(live_leases)" 0 "a fresh standalone database starts empty"
expect_eq "$(sqlite3 "file:$DB?mode=ro" 'pragma integrity_check')" ok "the fresh database"
ipam ADD d; expect_eq "$RC" 0 "ADD after recovery"
pass "corrupt database moved to $ASIDE; fresh database serves ADDs"
stop_daemon

# Not a database at all (e.g. truncated and overwritten): the same.
rm -f "$ASIDE"*
head -c 10000 /dev/urandom >"$DB"; rm -f "$DB-wal" "$DB-shm"
start_daemon "$SUBNETS"
[ "$(ls "$DB".corrupt-* | wc -l)" -ge 1 ] || fail "garbage file not moved aside"
pass "a file that is not a database is moved aside too"
stop_daemon

# A newer schema is not corruption: refused, nothing moved.
rm -f "$DB".corrupt-*
sqlite3 "$DB" 'pragma user_version = 9999'
BEFORE=$(ls "$E2E_DIR" | sort | paste -sd,)
"$SUBLEASE_BIN/subleased" --standalone --subnets "$SUBNETS" --socket "$SOCK" --db "$DB" --metrics-address "" \
  >"$E2E_DIR/newer.log" 2>&1 && fail "subleased started on a newer-schema database"
expect_contains "$(cat "$E2E_DIR/newer.log")" "newer sublease" "newer schema message"
expect_eq "$(ls "$E2E_DIR" | grep -v newer.log | sort | paste -sd,)" "$(echo "$BEFORE" | tr ',' '\n' | grep -v newer.log | paste -sd,)" "files after refusing a newer schema"
pass "a newer-schema database is refused and left in place"
