#!/usr/bin/env bash
# The Debian package, end to end, as root: build it with CPack from the build tree,
# install it with dpkg, start the daemon FROM THE INSTALLED FILES (/usr/bin/subleased
# with /etc/sublease/subleased.yaml and its example Subnet; only the socket and the
# database are moved to a temp dir), allocate through the installed plugin under both
# names exactly as a CNI runtime execs it, read the lease with the installed
# subleasectl, then remove (dpkg -r: programs gone, conffiles kept) and purge (dpkg -P:
# everything gone). Bounded waits; the EXIT trap stops the daemon and purges the package.
set -euo pipefail
: "${SUBLEASE_BUILD_DIR:?set SUBLEASE_BUILD_DIR to the build tree (where CPackConfig.cmake is)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "the package test installs a .deb: run it as root"
for t in cpack dpkg dpkg-deb jq curl systemd-analyze file; do
  command -v "$t" >/dev/null || fail "$t missing (scripts/install-deps.sh)"
done
if dpkg-query -W -f='${Status}' sublease 2>/dev/null | grep -q 'install ok installed'; then
  fail "a sublease package is already installed here; this test will not replace it"
fi

dir=$(mktemp -d /tmp/sublease-deb.XXXXXX)
pid=""
installed=0
cleanup() {
  local rc=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ $rc -ne 0 ] && [ -f "$dir/daemon.log" ] && { echo "--- daemon log ---" >&2; tail -n 30 "$dir/daemon.log" >&2; }
  [ "$installed" -eq 1 ] && dpkg -P sublease >/dev/null 2>&1
  rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT

# 1. Build the package.
(cd "$SUBLEASE_BUILD_DIR" && cpack -G DEB -B "$dir/pkg" >"$dir/cpack.log" 2>&1) || { cat "$dir/cpack.log" >&2; fail "cpack"; }
deb=$(ls "$dir"/pkg/sublease_*.deb)
echo "ok: built $(basename "$deb")"
# Here-strings, not pipes into grep -q: with pipefail, the writer's SIGPIPE would count.
info=$(dpkg-deb -I "$deb")
grep -q "Depends: .*libsqlite3" <<<"$info" || fail "Depends lacks the shared libraries: $info"
contents=$(dpkg-deb -c "$deb")
if grep -q '_test\|_bench' <<<"$contents"; then fail "tests or benchmarks in the package"; fi

# 2. Install it.
dpkg -i "$deb" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log" >&2; fail "dpkg -i"; }
installed=1
files=(/usr/bin/subleased /usr/bin/subleasectl /usr/lib/cni/sublease /usr/lib/cni/kube-ovn
       /opt/cni/bin/sublease /opt/cni/bin/kube-ovn /lib/systemd/system/subleased.service
       /etc/sublease/subleased.yaml /etc/sublease/subnets.d/example-macvlan.yaml
       /usr/share/sublease/schema/0001_init.sql /usr/share/sublease/schema/README.md
       /usr/share/doc/sublease/install-host.md)
for f in "${files[@]}"; do [ -e "$f" ] || fail "$f not installed"; done
for f in /usr/bin/subleased /usr/bin/subleasectl /usr/lib/cni/sublease /opt/cni/bin/kube-ovn; do
  [ -x "$f" ] || fail "$f not executable"
done
# Shipped without debug info (install(PROGRAMS) escapes CPack's strip; cni/CMakeLists.txt).
for f in /usr/bin/subleased /usr/bin/subleasectl /usr/lib/cni/sublease /usr/lib/cni/kube-ovn \
         /opt/cni/bin/sublease /opt/cni/bin/kube-ovn; do
  kind=$(file -b "$f")
  grep -q ', stripped' <<<"$kind" || fail "$f is not stripped: $kind"
done
echo "ok: installed binaries are stripped (plugin $(stat -c %s /usr/lib/cni/sublease) bytes)"
conffiles=$(dpkg-query -W -f='${Conffiles}' sublease)
grep -q /etc/sublease/subleased.yaml <<<"$conffiles" || fail "subleased.yaml is not a conffile"
out=$(systemd-analyze verify /lib/systemd/system/subleased.service 2>&1) || fail "verify: $out"
[ -z "$out" ] || fail "installed unit: $out"
grep -q -- "--socket" <<<"$(/usr/bin/subleased --help)" || fail "subleased --help"
grep -q "history" <<<"$(/usr/bin/subleasectl --help)" || fail "subleasectl --help"
echo "ok: installed ${#files[@]} files, conffiles, unit verified"

# 3. Run the installed daemon with the installed config (socket and database moved).
sock="$dir/sublease.sock"
db="$dir/sublease.db"
/usr/bin/subleased --config /etc/sublease/subleased.yaml --socket "$sock" --db "$db" \
  --metrics-address "" >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf --max-time 2 --unix-socket "$sock" http://x/v1/cni/status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "installed subleased exited"
  sleep 0.1
done
curl -sf --max-time 2 --unix-socket "$sock" http://x/v1/cni/status >/dev/null || fail "daemon not ready in 10 s"

conf=$(jq -nc --arg s "$sock" '{cniVersion:"1.0.0",name:"macvlan",type:"macvlan",
        ipam:{type:"kube-ovn",server_socket:$s,provider:"macvlan.default"}}')
cni() {  # cni PLUGIN COMMAND CONTAINER
  printf '%s' "$conf" | env -i PATH=/usr/bin:/bin CNI_COMMAND="$2" CNI_CONTAINERID="$3" \
    CNI_NETNS=/proc/self/ns/net CNI_IFNAME=net1 CNI_PATH=/usr/lib/cni "$1"
}
r1=$(cni /usr/lib/cni/sublease ADD deb-c1) || fail "ADD through /usr/lib/cni/sublease: $r1"
[ "$(echo "$r1" | jq -r '.ips[0].address')" = "172.17.0.11/16" ] || fail "first address: $r1"
r2=$(cni /opt/cni/bin/kube-ovn ADD deb-c2) || fail "ADD through /opt/cni/bin/kube-ovn: $r2"
[ "$(echo "$r2" | jq -r '.ips[0].address')" = "172.17.0.12/16" ] || fail "second address: $r2"
echo "ok: allocated $(echo "$r1" | jq -r '.ips[0].address') and $(echo "$r2" | jq -r '.ips[0].address') through the installed plugin"
n=$(/usr/bin/subleasectl --db "$db" -o json leases | jq '.items | length')
[ "$n" = 2 ] || fail "subleasectl sees $n leases, want 2"
cni /usr/lib/cni/sublease DEL deb-c1 >/dev/null || fail "DEL"
n=$(/usr/bin/subleasectl --db "$db" -o json leases | jq '.items | length')
[ "$n" = 1 ] || fail "after DEL subleasectl sees $n leases, want 1"
echo "ok: installed subleasectl reads the leases"
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "daemon did not stop on SIGTERM"
pid=""

# 4. Remove, then purge.
dpkg -r sublease >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log" >&2; fail "dpkg -r"; }
for f in /usr/bin/subleased /usr/bin/subleasectl /usr/lib/cni/sublease /usr/lib/cni/kube-ovn \
         /opt/cni/bin/sublease /opt/cni/bin/kube-ovn /lib/systemd/system/subleased.service \
         /usr/share/sublease /usr/share/doc/sublease; do
  [ ! -e "$f" ] || fail "$f left after dpkg -r"
done
[ -e /etc/sublease/subleased.yaml ] || fail "dpkg -r removed a conffile (only purge should)"
dpkg -P sublease >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log" >&2; fail "dpkg -P"; }
installed=0
[ ! -e /etc/sublease ] || fail "/etc/sublease left after purge: $(ls -R /etc/sublease)"
dpkg-query -W sublease >/dev/null 2>&1 && fail "package still known to dpkg"
echo "ok: removed (conffiles kept) and purged cleanly"
