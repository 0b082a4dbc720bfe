#!/usr/bin/env bash
# The image, as the DaemonSet runs it (opt-in: too slow for every CI run, and it needs a
# container engine). Runs the install-cni step and then the daemon in containers with a
# read-only root, every capability dropped and no privilege escalation, and gets an
# address through the plugin that install-cni put into a host directory, exactly as a
# CNI runtime on the node would. Build the image first: scripts/image.sh.
#
#   SUBLEASE_IMAGE_TEST=1 tests/packaging/image_test.sh
#   (or configure with SUBLEASE_IMAGE_TEST=1 in the environment: ctest -R packaging.image)
#
# SUBLEASE_IMAGE (default sublease:0.1.0), SUBLEASE_ENGINE (docker|podman),
# SUBLEASE_ENGINE_ARGS (global engine options) and SUBLEASE_RUN_ARGS (extra `run`
# options) as for scripts/image.sh. Needs root (the daemon's socket admits root only).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -n "${SUBLEASE_IMAGE_TEST:-}" ] || fail "opt-in test: set SUBLEASE_IMAGE_TEST=1 (needs root, docker or podman, and the image from scripts/image.sh)"
[ "$(id -u)" -eq 0 ] || fail "run as root: the daemon's socket admits root only"
root=$(cd "$(dirname "$0")/../.." && pwd)
image=${SUBLEASE_IMAGE:-sublease:0.1.0}
engine=${SUBLEASE_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null; then engine=docker; else engine=podman; fi
fi
command -v "$engine" >/dev/null || fail "$engine is not installed"
for t in jq file; do command -v "$t" >/dev/null || fail "$t missing (scripts/install-deps.sh)"; done
read -r -a engine_args <<<"${SUBLEASE_ENGINE_ARGS:-}"
read -r -a run_args <<<"${SUBLEASE_RUN_ARGS:-}"
eng() { "$engine" "${engine_args[@]}" "$@"; }
eng image inspect "$image" >/dev/null 2>&1 || fail "no image $image: build it with scripts/image.sh"

# What the DaemonSet's securityContext says, for both containers.
locked=(--read-only --cap-drop ALL --security-opt no-new-privileges --user 0:0 --network none)
dir=$(mktemp -d /tmp/sublease-image.XXXXXX)
name=sublease-image-test-$$
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then eng logs "$name" 2>&1 | tail -n 30 >&2 || true; fi
  eng rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT
mkdir -p "$dir/cni-bin" "$dir/run" "$dir/state" "$dir/subnets"
cp "$root/packaging/examples/seed-subnet.yaml" "$dir/subnets/"

# 1. install-cni into a host directory, as the init container does.
eng run --rm "${locked[@]}" "${run_args[@]}" -v "$dir/cni-bin:/host/opt/cni/bin" \
  --entrypoint /usr/lib/sublease/install-cni.sh "$image" /host/opt/cni/bin >"$dir/install.log" 2>&1 ||
  { cat "$dir/install.log" >&2; fail "install-cni"; }
for f in sublease kube-ovn; do
  [ -x "$dir/cni-bin/$f" ] || fail "install-cni did not install $f: $(cat "$dir/install.log")"
  grep -q ', stripped' <<<"$(file -b "$dir/cni-bin/$f")" || fail "$f is not stripped"
done
echo "ok: install-cni installed sublease and kube-ovn ($(stat -c %s "$dir/cni-bin/sublease") bytes each)"

# 2. The daemon (standalone on the seed's Subnet; the socket in a host directory).
eng run -d --name "$name" "${locked[@]}" "${run_args[@]}" --tmpfs /tmp \
  -v "$dir/run:/run/sublease" -v "$dir/state:/var/lib/sublease" -v "$dir/subnets:/etc/sublease/subnets.d:ro" \
  "$image" --standalone --subnets /etc/sublease/subnets.d --socket /run/sublease/sublease.sock \
  --db /var/lib/sublease/sublease.db --metrics-address "" >/dev/null || fail "engine run of the daemon"
sock="$dir/run/sublease.sock"
for _ in $(seq 1 300); do
  [ -S "$sock" ] && break
  [ "$(eng inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || fail "the daemon's container stopped"
  sleep 0.1
done
[ -S "$sock" ] || fail "no socket in 30 s"

# 3. CNI ADD and DEL through the installed plugin, as the runtime execs it.
conf=$(jq -nc --arg s "$sock" '{cniVersion:"1.0.0",name:"macvlan",type:"macvlan",
        ipam:{type:"kube-ovn",server_socket:$s,provider:"macvlan.default"}}')
cni() {  # cni COMMAND CONTAINER
  printf '%s' "$conf" | env -i PATH=/usr/bin:/bin CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
    CNI_NETNS=/proc/self/ns/net CNI_IFNAME=net1 CNI_PATH="$dir/cni-bin" "$dir/cni-bin/kube-ovn"
}
r=""
for _ in $(seq 1 50); do  # the socket exists a moment before the daemon answers
  if r=$(cni ADD image-c1 2>&1); then break; fi
  sleep 0.2
done
[ "$(jq -r '.ips[0].address' <<<"$r" 2>/dev/null)" = "172.17.0.11/16" ] || fail "ADD: $r"
echo "ok: the containerised daemon allocated 172.17.0.11/16 through the installed plugin"
cni DEL image-c1 >/dev/null || fail "DEL"
eng stop -t 10 "$name" >/dev/null
code=$(eng inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "the daemon exited $code on SIGTERM"
echo "ok: DEL, and the daemon stopped cleanly (exit 0) with a read-only root and no capabilities"
