#!/usr/bin/env bash
# Installs what is missing, builds, and runs subleased in standalone mode (no
# Kubernetes) on an embedded default: the seed's Subnet (172.17.0.0/16, provider
# macvlan.default) and a database under ./.state/. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
state="${SUBLEASE_STATE_DIR:-$PWD/.state}"
mkdir -p "$state"
cat <<EOT

subleased is starting in standalone mode.
  Subnet:   packaging/examples/seed-subnet.yaml (macvlan.default, 172.17.0.0/16)
  socket:   $state/sublease.sock
  database: $state/sublease.db   (./build/bin/subleasectl --db $state/sublease.db leases)
  metrics:  curl http://127.0.0.1:9468/metrics

Get an address from another terminal, exactly as a CNI plugin would:
  ./scripts/cni.sh ADD demo-container
  ./scripts/cni.sh DEL demo-container

EOT
exec ./build/bin/subleased --standalone \
  --subnets packaging/examples/seed-subnet.yaml \
  --socket "$state/sublease.sock" --db "$state/sublease.db" "$@"
