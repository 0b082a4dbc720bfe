#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite under ctest.
# Needs root: end-to-end tests create network namespaces and run real CNI plugins.
# In CI ($CI set, as .ci/run does) the build treats warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ -n "${CI:-}" ]; then export SUBLEASE_WERROR=ON; fi
./scripts/build.sh
ctest --preset release --timeout 600 -j2 "$@"
