#!/usr/bin/env bash
# Builds the subleased image from packaging/image/Dockerfile with docker or podman and
# prints its size.
#   scripts/image.sh [--local-base] [TAG]        (TAG default sublease:0.1.0)
# --local-base: for machines that cannot pull debian:12 and debian:12-slim; makes both
# base images here with mmdebstrap (minbase, this host's apt mirrors) and imports them
# as localhost/sublease-base:bookworm and localhost/sublease-base:bookworm-slim.
# SUBLEASE_ENGINE=docker|podman picks the engine (default: docker if on PATH, else
# podman). SUBLEASE_ENGINE_ARGS adds global engine options and SUBLEASE_BUILD_ARGS
# build options, e.g. for podman inside a VM without CAP_SYS_RESOURCE and with hybrid
# cgroups (docs/install-cluster.md, "Building the image").
set -euo pipefail
cd "$(dirname "$0")/.."
local_base=0
if [ "${1:-}" = --local-base ]; then local_base=1; shift; fi
tag=${1:-sublease:0.1.0}
engine=${SUBLEASE_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null; then engine=docker
  elif command -v podman >/dev/null; then engine=podman
  else echo "image.sh: neither docker nor podman is installed (apt-get install podman)" >&2; exit 1
  fi
fi
read -r -a engine_args <<<"${SUBLEASE_ENGINE_ARGS:-}"
read -r -a build_args <<<"${SUBLEASE_BUILD_ARGS:-}"
t0=$SECONDS

if [ "$local_base" = 1 ]; then
  command -v mmdebstrap >/dev/null || { echo "image.sh: --local-base needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
  mapfile -t mirrors < <(./scripts/debian-sources.sh)
  # Merged /usr set up by mmdebstrap's hook, as Debian's images are: without it bookworm
  # gets the usrmerge package and, through it, perl (about 50 MB).
  hook=--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  echo "image.sh: making localhost/sublease-base:bookworm with mmdebstrap"
  mmdebstrap --quiet --variant=minbase "$hook" bookworm - "${mirrors[@]}" |
    "$engine" "${engine_args[@]}" import - localhost/sublease-base:bookworm >/dev/null
  # The runtime base leaves out what debian:12-slim leaves out: documentation, manual
  # pages and translations.
  echo "image.sh: making localhost/sublease-base:bookworm-slim with mmdebstrap"
  mmdebstrap --quiet --variant=minbase "$hook" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm - "${mirrors[@]}" |
    "$engine" "${engine_args[@]}" import - localhost/sublease-base:bookworm-slim >/dev/null
  build_args+=(--build-arg BASE=localhost/sublease-base:bookworm
               --build-arg RUNTIME_BASE=localhost/sublease-base:bookworm-slim)
fi

ignore=(--ignorefile packaging/image/Dockerfile.dockerignore)
# docker (BuildKit) reads packaging/image/Dockerfile.dockerignore by itself.
[ "$engine" = docker ] && ignore=()
echo "image.sh: $engine build -t $tag (builds sublease inside; about 10 min on 2 cores)"
"$engine" "${engine_args[@]}" build -f packaging/image/Dockerfile "${ignore[@]}" \
  "${build_args[@]}" -t "$tag" .
size=$("$engine" "${engine_args[@]}" image inspect --format '{{.Size}}' "$tag")
echo "image.sh: built $tag: $((size / 1000000)) MB, in $((SECONDS - t0)) s"
