#!/usr/bin/env bash
# Calls the sublease IPAM plugin by hand, as a CNI runtime would, against the daemon
# that scripts/run.sh started. Usage: scripts/cni.sh ADD|DEL CONTAINER_ID [IFNAME]
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:?usage: scripts/cni.sh ADD|DEL CONTAINER_ID [IFNAME]}"
container="${2:?usage: scripts/cni.sh ADD|DEL CONTAINER_ID [IFNAME]}"
ifname="${3:-net1}"
state="${SUBLEASE_STATE_DIR:-$PWD/.state}"
config=$(cat <<EOT
{"cniVersion":"1.0.0","name":"macvlan","type":"macvlan",
 "ipam":{"type":"kube-ovn","server_socket":"$state/sublease.sock","provider":"macvlan.default"}}
EOT
)
CNI_COMMAND="$cmd" CNI_CONTAINERID="$container" CNI_NETNS=/proc/self/ns/net CNI_IFNAME="$ifname" \
  CNI_PATH=/usr/lib/cni ./build/bin/sublease <<<"$config"
echo
