#!/usr/bin/env bash
# Configures and builds the release preset into build/ (binaries in build/bin/).
# SUBLEASE_WERROR=ON makes warnings errors (scripts/test.sh sets it when $CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release -DSUBLEASE_WERROR="${SUBLEASE_WERROR:-OFF}" >/dev/null
cmake --build --preset release
