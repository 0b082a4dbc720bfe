#!/bin/sh
# Runs the fake API server's tests (Python 3 standard library, the openssl CLI; kubectl
# when installed).  Usage: tests/fakeapi/run_tests.sh [unittest args, e.g. -k Watch]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "run_tests.sh: python3 is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "run_tests.sh: openssl is required" >&2; exit 1; }
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m unittest discover -s "$here" -p 'test_*.py' -v "$@"
