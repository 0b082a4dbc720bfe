#!/usr/bin/env bash
# Installs exactly the Debian 12 packages sublease needs that are missing, on any
# Debian 12 down to a minimal root (`mmdebstrap --variant=minbase bookworm`; .ci/run
# proves that on every CI run). Build, run and test dependencies; docs/dependencies.md
# says why each is here. apt's and dpkg's output goes to a log that is printed only
# when the install fails. No service is left enabled or running (nghttp2-proxy ships
# nghttpx.service; the test that needs nghttpx starts its own).
#   scripts/install-deps.sh               everything: build, run, tests, benchmarks
#   scripts/install-deps.sh --build-only  what building the shipped programs and the
#                                         .deb needs (the image's build stage)
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config dpkg-dev file
  libsqlite3-dev libsqlitecpp-dev
  libuv1-dev libsimdjson-dev libcurl4-openssl-dev
  libexpected-dev libyaml-cpp-dev libcli11-dev libhttp-parser-dev
)
if [ "${1:-}" != --build-only ]; then
  packages+=(
    git ca-certificates sqlite3
    libgtest-dev libgmock-dev libbenchmark-dev
    containernetworking-plugins iproute2 iputils-ping curl procps jq
    python3 openssl python3-yaml systemd nghttp2-proxy
  )
  # kubectl for the packaging and fake-API-server tests: Debian's, unless one is on PATH
  # already (an upstream kubectl package owns the same /usr/bin/kubectl).
  command -v kubectl >/dev/null || packages+=(kubernetes-client)
fi
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages and not root; run as root (or with sudo)" >&2
  exit 1
fi

log=$(mktemp /tmp/sublease-install-deps.XXXXXX.log)
# A policy-rc.d that refuses every start: packages' maintainer scripts then start no
# service while we install (one that the administrator already has is left alone).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# sublease install-deps: start no service during the install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
start=$SECONDS
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps: apt-get failed (log above, also in $log)" >&2
  exit 1
fi
# nghttp2-proxy enables nghttpx.service on install: we want the binary, not a service.
for p in "${missing[@]}"; do
  if [ "$p" = nghttp2-proxy ] && command -v systemctl >/dev/null; then
    if [ -d /run/systemd/system ]; then systemctl stop nghttpx.service >>"$log" 2>&1 || true; fi
    systemctl disable nghttpx.service >>"$log" 2>&1 || true
  fi
done
rm -f "$log"
echo "install-deps: installed ${#missing[@]} packages in $((SECONDS - start)) s"
