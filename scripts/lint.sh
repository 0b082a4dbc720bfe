#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy's short list, warnings are errors) over the project's
# sources using build/compile_commands.json. Usage: scripts/lint.sh [files...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/compile_commands.json ] || ./scripts/build.sh
if [ $# -eq 0 ]; then
  mapfile -t files < <(git ls-files 'common/*.cc' 'daemon/*.cc' 'cni/*.cc' 'sync/*.cc' | grep -v '_bench.cc$')
else
  files=("$@")
fi
clang-tidy -p build --quiet "${files[@]}"
