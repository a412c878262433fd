# shellcheck shell=bash disable=SC2034  # settings are used by the sourcing scripts
# Shared code of image/build.sh and image/boot-test.sh: settings, host packages, the
# cached base root file system of the Pi image, and qemu-user for arm64 chroots.
# Sourced, not run. Callers use `set -euo pipefail`. The generic helpers (nw_log, nw_die,
# nw_elapsed, nw_require_root, nw_apt_install) come from cross/lib.sh.

# shellcheck source=cross/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cross/lib.sh"

# --- settings (environment) --------------------------------------------------------------
# NODEWATCH_IMAGE_CACHE   where the base rootfs is cached (default /var/cache/nodewatch)
# NODEWATCH_IMAGE_MIRROR  Debian mirror (default http://deb.debian.org/debian)

NW_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
NW_IMAGE_DIR="$NW_REPO/image"
NW_IMAGE_CACHE=${NODEWATCH_IMAGE_CACHE:-/var/cache/nodewatch}
NW_IMAGE_CACHE=${NW_IMAGE_CACHE%/}
NW_IMAGE_MIRROR=${NODEWATCH_IMAGE_MIRROR:-http://deb.debian.org/debian}
NW_IMAGE_SUITE=trixie
NW_IMAGE_OUT="$NW_REPO/target/image"
NW_DEB_DIR="$NW_REPO/target/deb"

# The base root file system: Debian's packages only, built once and cached, keyed on
# these lists and on image/rootfs-base.sh (see nw_rootfs_key). What changes with every
# build of nodewatch (its packages, the first-boot files) is layered on a copy of it.
NW_ROOTFS_PACKAGES=(
  # boot: Debian's kernel and the Raspberry Pi firmware/bootloader files
  linux-image-arm64 raspi-firmware firmware-brcm80211 wireless-regdb
  # the system
  systemd-sysv systemd-timesyncd systemd-resolved udev dbus kmod adduser sudo
  iproute2 iputils-ping ca-certificates curl less zstd
  # first boot: grow the root partition, read the boot partition
  fdisk e2fsprogs dosfstools util-linux
  # operator access and Wi-Fi
  openssh-server wpasupplicant i2c-tools
  # the builder runs in Docker
  docker.io
)
NW_ROOTFS_COMPONENTS="main non-free-firmware"

# arm64 programs (maintainer scripts, useradd, systemctl) run in the image's chroot
# through qemu-user, registered with binfmt_misc (the F flag keeps it usable in a chroot).
nw_enable_binfmt() {
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    mountpoint -q /proc/sys/fs/binfmt_misc ||
      mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 ||
      nw_die "cannot register qemu-aarch64 with binfmt_misc (is qemu-user-static installed?)"
  fi
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    nw_die "qemu-aarch64 binfmt entry lacks the F flag: chroots cannot run arm64 programs"
}

# The cache key of the base rootfs: every input that changes its content.
nw_rootfs_key() {
  {
    printf 'suite %s\nmirror %s\ncomponents %s\npackages %s\n' \
      "$NW_IMAGE_SUITE" "$NW_IMAGE_MIRROR" "$NW_ROOTFS_COMPONENTS" "${NW_ROOTFS_PACKAGES[*]}"
    cat "$NW_IMAGE_DIR/rootfs-base.sh"
  } | sha256sum | cut -c1-16
}

# Prints the path of a complete base rootfs, building it when no cached one matches.
nw_ensure_rootfs() {
  local key dir start include
  key=$(nw_rootfs_key)
  dir="$NW_IMAGE_CACHE/pi-rootfs-$key"
  if [[ -f $dir/.nodewatch-rootfs-complete ]]; then
    nw_log "using cached base rootfs $dir"
    printf '%s\n' "$dir"
    return 0
  fi
  nw_enable_binfmt
  start=$SECONDS
  include=$(IFS=,; echo "${NW_ROOTFS_PACKAGES[*]}")
  nw_log "building the base rootfs (Debian $NW_IMAGE_SUITE arm64, under qemu-user: 15-25 min)"
  mkdir -p "$NW_IMAGE_CACHE"
  rm -rf "$dir.new"
  # Old bases (other keys) are removed: each is about 1 GB.
  find "$NW_IMAGE_CACHE" -maxdepth 1 -name 'pi-rootfs-*' ! -name "pi-rootfs-$key*" -exec rm -rf {} +
  # update-initramfs is deferred to one run at the end (under emulation each run takes
  # minutes, and the kernel and firmware packages would each trigger one).
  # The archive may be a frozen snapshot: don't reject its Release file as expired.
  # shellcheck disable=SC2016  # the hooks are expanded by mmdebstrap's sh ($1 = the rootfs)
  mmdebstrap --architectures=arm64 --variant=apt \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$include" \
    --setup-hook='mkdir -p "$1/boot/firmware"' \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.real --add /usr/sbin/update-initramfs
                      printf "#!/bin/sh\necho update-initramfs: deferred by the image build\n" > "$1/usr/sbin/update-initramfs"
                      chmod 755 "$1/usr/sbin/update-initramfs"' \
    --customize-hook="bash \"$NW_IMAGE_DIR/rootfs-base.sh\" \"\$1\"" \
    "$NW_IMAGE_SUITE" "$dir.new" "deb $NW_IMAGE_MIRROR $NW_IMAGE_SUITE $NW_ROOTFS_COMPONENTS" </dev/null >&2
  touch "$dir.new/.nodewatch-rootfs-complete"
  mv "$dir.new" "$dir"
  nw_log "base rootfs built in $(nw_elapsed "$start") ($(du -sh "$dir" | cut -f1))"
  printf '%s\n' "$dir"
}
