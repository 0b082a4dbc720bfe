#!/usr/bin/env bash
# systemd/subleased.service passes `systemd-analyze verify` with no warning at all, and
# its hardening scores "OK" (exposure at most 2.5) in `systemd-analyze security`.
# systemd need not be running (PID 1): both read the unit file offline. The unit's
# ExecStart is pointed at the build tree's binary (verify checks that it exists).
set -euo pipefail
: "${SUBLEASE_BIN:?set SUBLEASE_BIN to the bin directory of the build}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze missing (scripts/install-deps.sh installs systemd)" >&2; exit 1; }
dir=$(mktemp -d /tmp/sublease-systemd.XXXXXX)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/bin/subleased|$SUBLEASE_BIN/subleased|" "$ROOT/systemd/subleased.service" >"$dir/subleased.service"
grep -q "^ExecStart=$SUBLEASE_BIN/subleased --config /etc/sublease/subleased.yaml$" "$dir/subleased.service" \
  || { echo "FAIL: ExecStart is not the packaged command line" >&2; exit 1; }

out=$(systemd-analyze verify "$dir/subleased.service" 2>&1) || { echo "FAIL: verify: $out" >&2; exit 1; }
[ -z "$out" ] || { echo "FAIL: systemd-analyze verify warned:" >&2; echo "$out" >&2; exit 1; }
echo "ok: systemd-analyze verify is silent"

for key in Type=notify Restart=on-failure ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes \
           PrivateTmp=yes RuntimeDirectory=sublease StateDirectory=sublease CapabilityBoundingSet=CAP_CHOWN; do
  grep -qx "$key" "$dir/subleased.service" || { echo "FAIL: unit lacks $key" >&2; exit 1; }
done
echo "ok: hardening keys present"

if ! sec=$(systemd-analyze security --offline=yes --threshold=25 "$dir/subleased.service" 2>&1); then
  echo "$sec" | tail -5 >&2
  echo "FAIL: exposure above 2.5" >&2; exit 1
fi
echo "ok: $(echo "$sec" | grep 'Overall exposure')"
