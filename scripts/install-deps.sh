#!/usr/bin/env bash
# Installs exactly the Debian 12 packages sublease needs that are missing.
# Build and test dependencies; docs/dependencies.md says why each is here.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libsqlite3-dev libsqlitecpp-dev sqlite3
  libuv1-dev libsimdjson-dev libcurl4-openssl-dev
  libexpected-dev libyaml-cpp-dev libcli11-dev libhttp-parser-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  containernetworking-plugins iproute2 iputils-ping curl procps jq
  python3 openssl python3-yaml systemd dpkg-dev file nghttp2-proxy
)
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
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
