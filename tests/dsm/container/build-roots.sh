#!/bin/sh
# Build (once) the two Debian 12 roots the DSM container tests use, without pulling any
# container image: everything comes from the Debian archive through debootstrap.
#
#   amd64/  a minimal Debian 12 with python3.11 and venv: the fake NAS runs inside it
#           (tests/dsm/container/enter.sh), in its own mount, PID and network namespaces.
#   arm64/  the files of arm64 python3.11 and the C libraries it needs, extracted without
#           running anything: the armv8 package's wheels are imported in it under
#           qemu-user (tests/dsm/test_armv8_qemu.py). No binfmt_misc registration needed.
#
# Usage: build-roots.sh [CACHE_DIR]   (default $DSMPACS_CI_CACHE or /var/cache/dsmpacs-ci)
# Each root is rebuilt only when this script changes (a stamp file in the root keeps the
# script's hash). Run as root; needs debootstrap. About 2-4 minutes the first time.
set -eu
CACHE=${1:-${DSMPACS_CI_CACHE:-/var/cache/dsmpacs-ci}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
AMD64_PACKAGES=python3.11,python3-venv,iproute2,procps
ARM64_PACKAGES=python3.11,libstdc++6,libgcc-s1,zlib1g

[ "$(id -u)" -eq 0 ] || { echo "build-roots.sh: run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-roots.sh: apt-get install debootstrap" >&2; exit 1; }
mkdir -p "$CACHE"

# A root is as this script made it: its hash (with the arch) is the stamp.
SCRIPT_HASH=$(sha256sum "$0" | cut -c1-64)
stamp_of() { printf '%s %s\n' "$SCRIPT_HASH" "$1" | sha256sum | cut -c1-16; }

build() {   # build ARCH PACKAGES MODE
    arch=$1 packages=$2 mode=$3
    dest=$CACHE/debian12-$arch
    stamp=$(stamp_of "$arch")
    if [ -f "$dest/.dsmpacs-root" ] && [ "$(cat "$dest/.dsmpacs-root")" = "$stamp" ]; then
        echo "$dest: up to date"
        return
    fi
    rm -rf "$dest.new"
    if [ "$mode" = native ]; then
        debootstrap --variant=minbase --include="$packages" "$SUITE" "$dest.new" "$MIRROR" >"$CACHE/$arch.log" 2>&1 \
            || { tail -20 "$CACHE/$arch.log" >&2; exit 1; }
        rm -rf "$dest.new/var/cache/apt/archives/"*.deb "$dest.new/var/lib/apt/lists/"*
    else
        # First stage only: it downloads the packages and their dependencies and unpacks
        # the base set; the rest is unpacked here. No arm64 program runs, so neither
        # binfmt_misc nor a second stage is needed.
        debootstrap --arch="$arch" --foreign --variant=minbase --include="$packages" \
            "$SUITE" "$dest.new" "$MIRROR" >"$CACHE/$arch.log" 2>&1 \
            || { tail -20 "$CACHE/$arch.log" >&2; exit 1; }
        for deb in "$dest.new"/var/cache/apt/archives/*.deb; do
            dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$dest.new"
        done
        rm -rf "$dest.new/var/cache/apt/archives/"*.deb "$dest.new/debootstrap"
    fi
    echo "$stamp" >"$dest.new/.dsmpacs-root"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
    echo "$dest: built"
}

build amd64 "$AMD64_PACKAGES" native
build arm64 "$ARM64_PACKAGES" foreign
