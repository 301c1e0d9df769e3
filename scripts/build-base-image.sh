#!/usr/bin/env bash
# Build a local base image for the Dockerfile without any image registry:
# debootstrap a minimal Debian bookworm with python3 + venv + pip, then `docker import` it.
#
#   bash scripts/build-base-image.sh [--force]          -> image taskexec-base:bookworm
#   docker build --build-arg BASE_IMAGE=taskexec-base:bookworm -t taskexec:latest .
#
# Needs root, debootstrap, a Docker engine and a reachable Debian mirror
# (TEL_DEBIAN_MIRROR, default http://deb.debian.org/debian). Skips if the image exists.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="${TEL_BASE_IMAGE:-taskexec-base:bookworm}"
MIRROR="${TEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=0; [[ "${1:-}" == --force ]] && force=1

docker info >/dev/null 2>&1 || die "no Docker engine answering (bash scripts/services.sh start)"
if [[ $force == 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  info "$IMAGE already exists (--force to rebuild)"; exit 0
fi
is_root || die "debootstrap needs root"
have debootstrap || [[ -x /usr/sbin/debootstrap ]] || die "debootstrap not found: run scripts/bootstrap.sh"

mkdir -p "$RUN_DIR"
work="$(mktemp -d "$RUN_DIR/base-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log "debootstrap bookworm (minbase + python3) into ${work#"$ROOT"/} (a few minutes; log .run/build-base-image.log)"
if ! /usr/sbin/debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$rootfs" "$MIRROR" >"$RUN_DIR/build-base-image.log" 2>&1; then
  tail -n 20 "$RUN_DIR/build-base-image.log" >&2
  die "debootstrap failed (log: $RUN_DIR/build-base-image.log)"
fi
# Slim it down: no apt lists, caches, docs or man pages in the image.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
       "$rootfs"/var/log/*.log "$rootfs"/tmp/*
# Trust what this host trusts: where outbound HTTPS goes through a TLS-inspecting proxy, the
# host's bundle carries its CA and pip inside `docker build` needs it too (TEL_BASE_HOST_CA=0: off).
if [[ "${TEL_BASE_HOST_CA:-1}" == 1 && -s /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" \
  >"$rootfs/etc/apt/sources.list"

log "docker import -> $IMAGE"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
info "$IMAGE: $(docker run --rm "$IMAGE" python3 --version 2>&1)"
