#!/bin/sh
# install-cni.sh DIR: the DaemonSet's init container. Copies the plugin into the node's
# CNI binary directory as `sublease` and as `kube-ovn` (the name the seed's NADs use).
# Each copy is written beside its target and renamed over it, so a runtime that execs
# the plugin at that moment runs either the old or the new binary, never half of one.
# A `kube-ovn` that is not ours (Kube-OVN's own plugin) is left alone.
set -eu
dir=${1:?usage: install-cni.sh CNI_BIN_DIR}
src=/usr/lib/cni/sublease
[ -d "$dir" ] || { echo "install-cni: $dir is not a directory" >&2; exit 1; }

install_as() {
  tmp="$dir/.$1.sublease-tmp"
  cp "$src" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$dir/$1"
  echo "install-cni: installed $dir/$1"
}

install_as sublease
# Our plugin's binary carries the daemon's name in its messages; Kube-OVN's does not.
if [ -e "$dir/kube-ovn" ] && ! grep -q subleased "$dir/kube-ovn"; then
  echo "install-cni: $dir/kube-ovn belongs to another plugin (Kube-OVN?); not replacing it." \
       "NADs for sublease must use \"type\": \"sublease\" on this node." >&2
else
  install_as kube-ovn
fi
