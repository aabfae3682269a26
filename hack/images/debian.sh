#!/usr/bin/env bash
# Build the plain Debian rootfs image qscale/debian:$DEBIAN_SUITE with
# debootstrap (minbase) and `docker import` it. Skipped when the tag exists.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

IMAGE="qscale/debian:$DEBIAN_SUITE"
if have_image "$IMAGE" && [ "${QSCALE_REBUILD_DEBIAN:-0}" != 1 ]; then
  log "$IMAGE present"; exit 0
fi

command -v debootstrap >/dev/null 2>&1 || run_logged apt-debootstrap bash -c 'apt-get update -q && apt-get install -y -q debootstrap'

ROOTFS="$QSCALE_CACHE/rootfs/debian-$DEBIAN_SUITE"
TARBALL="$QSCALE_CACHE/rootfs/debian-$DEBIAN_SUITE.tar"

bootstrap() {
  rm -rf "$ROOTFS" "$TARBALL"; mkdir -p "$ROOTFS"
  nice -n 10 debootstrap --variant=minbase --include=ca-certificates \
    "$DEBIAN_SUITE" "$ROOTFS" "$DEBIAN_MIRROR"
  cat > "$ROOTFS/etc/apt/sources.list" <<LIST
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main
LIST
  # container-friendly apt: no recommends, no docs, clean caches
  cat > "$ROOTFS/etc/apt/apt.conf.d/90qscale" <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
CONF
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/* "$ROOTFS"/tmp/*
  : > "$ROOTFS/etc/hostname"
  rm -f "$ROOTFS/etc/resolv.conf"; : > "$ROOTFS/etc/resolv.conf"
  tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL" .
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$IMAGE"
  rm -rf "$ROOTFS" "$TARBALL"
}

run_logged "debian-$DEBIAN_SUITE-rootfs" bootstrap
log "$IMAGE built ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
