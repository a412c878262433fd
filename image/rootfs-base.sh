#!/usr/bin/env bash
# mmdebstrap customize hook of the cached base rootfs (image/lib.sh): undo the deferral of
# update-initramfs and build the initrd once. Kept minimal on purpose: this file is part
# of the cache key, and everything nodewatch-specific is layered per build (image/build.sh).
# usage: rootfs-base.sh ROOTFS_DIR   (arm64; needs qemu-aarch64 binfmt with the F flag)
set -euo pipefail
root=$1
if ! mountpoint -q "$root/proc"; then
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc"' EXIT
fi
rm "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$root" update-initramfs -c -k all
