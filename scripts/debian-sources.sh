#!/usr/bin/env bash
# Prints this host's Debian 12 apt sources as one-line entries ("deb URI SUITE main"),
# read from /etc/apt/sources.list, sources.list.d/*.list and deb822 *.sources: every
# enabled "deb" entry with a bookworm suite, main component only. For mmdebstrap
# (.ci/run, scripts/image.sh --local-base). Prints Debian's own mirror if none is found.
set -euo pipefail
{
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" {
           i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
           uri = $i; suite = $(i + 1)
           if (suite ~ /^bookworm/) print "deb " uri " " suite " main" }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush(  u, s) {
           if (types ~ /(^| )deb( |$)/ && enabled != "no")
             for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) if (suites[s] ~ /^bookworm/)
               print "deb " uris[u] " " suites[s] " main"
           types = ""; enabled = ""; nu = 0; ns = 0 }
         /^[ \t]*$/ { flush(); next }
         /^#/ { next }
         { key = tolower($1); sub(/:$/, "", key)
           if (key == "types") { $1 = ""; types = $0 }
           else if (key == "enabled") enabled = tolower($2)
           else if (key == "uris") for (i = 2; i <= NF; i++) uris[++nu] = $i
           else if (key == "suites") for (i = 2; i <= NF; i++) suites[++ns] = $i }
         END { flush() }' "$f"
  done
} | awk '!seen[$0]++' | grep . || echo "deb http://deb.debian.org/debian bookworm main"
