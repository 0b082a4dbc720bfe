#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite under ctest.
# Needs root: end-to-end tests create network namespaces and run real CNI plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
ctest --preset release --timeout 600 -j2 "$@"
