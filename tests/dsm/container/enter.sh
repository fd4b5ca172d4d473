#!/bin/sh
# Run a command as root inside the cached Debian 12 root (build-roots.sh), as in a
# throw-away container, with no container engine and no image pull:
#
#   enter.sh ROOT WORKDIR SRC SPKDIR -- COMMAND...
#
# unshare gives the command its own mount, PID, network, UTS and IPC namespaces. The root
# is the lower layer of an overlay whose writable layer is WORKDIR/upper, so the cached
# root is never changed (the package user, the fake NAS and its files land in WORKDIR and
# go with it). SRC (this repository) is bound read-only at /src, SPKDIR at /spk. The
# network namespace has only its loopback: whatever runs inside cannot reach the outside
# and cannot collide with ports on the host. When COMMAND ends, the PID namespace ends and
# the kernel kills every process left in it; the mounts go with the mount namespace.
set -eu
if [ $# -lt 6 ] || [ "$5" != "--" ]; then
    echo "usage: enter.sh ROOT WORKDIR SRC SPKDIR -- COMMAND..." >&2
    exit 2
fi
root=$1 work=$2 src=$3 spk=$4
shift 5
[ -f "$root/.dsmpacs-root" ] || { echo "enter.sh: $root is not a root made by build-roots.sh" >&2; exit 2; }
mkdir -p "$work/upper" "$work/work" "$work/merged"

# shellcheck disable=SC2016  # expanded by the inner shell
exec unshare --mount --pid --net --uts --ipc --fork --propagation private -- sh -euc '
    root=$1 work=$2 src=$3 spk=$4
    shift 4
    m=$work/merged
    mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/work" "$m"
    mount -t proc proc "$m/proc"
    mount --rbind /dev "$m/dev"
    mkdir -p "$m/src" "$m/spk"
    mount --bind "$src" "$m/src" && mount -o remount,bind,ro "$m/src"
    mount --bind "$spk" "$m/spk"
    hostname dsm-container
    exec chroot "$m" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
        /bin/sh -c "ip link set lo up && exec \"\$@\"" sh "$@"
' sh "$root" "$work" "$src" "$spk" "$@"
