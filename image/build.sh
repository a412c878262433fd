#!/usr/bin/env bash
# Builds what an operator installs: the .deb packages (image/debs.sh, into target/deb/)
# and the flashable Raspberry Pi image, Debian trixie arm64 with the agent installed:
#   target/image/nodewatch-pi-arm64.img.zst   and   .img.zst.sha256
# usage: image/build.sh            (as root, on Debian/Ubuntu x86_64; installs what it needs)
# Env: NODEWATCH_IMAGE_CACHE (base rootfs cache, default /var/cache/nodewatch),
#      NODEWATCH_SKIP_DEBS=1 (reuse the packages already in target/deb/).
# No loop devices, no mounts of the image, no Docker. See docs/pi-image.md.
set -euo pipefail
# shellcheck source=image/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

FAT_MIB=256 # the boot partition: firmware, kernel, initrd, device trees, nodewatch/
OFFSET_MIB=4
IMAGE_NAME=nodewatch-pi-arm64.img

declare -a STEP_TIMES=()
step_start=$SECONDS
step() { # step NAME: closes the previous step's timer
  if [[ -n ${step_name:-} ]]; then STEP_TIMES+=("$step_name: $(nw_elapsed "$step_start")"); fi
  step_name=$1
  step_start=$SECONDS
  nw_log "$1"
}

nw_require_root
t0=$SECONDS
step "host packages"
nw_apt_install mmdebstrap arch-test qemu-user-static binfmt-support debian-archive-keyring \
  dosfstools mtools fdisk e2fsprogs zstd
nw_enable_binfmt

step "packages (image/debs.sh)"
if [[ ${NODEWATCH_SKIP_DEBS:-0} != 1 ]]; then
  bash "$NW_IMAGE_DIR/debs.sh"
fi
shopt -s nullglob
agent_debs=("$NW_DEB_DIR"/nodewatch-agent_*_arm64.deb)
shopt -u nullglob
((${#agent_debs[@]} == 1)) ||
  nw_die "expected one nodewatch-agent arm64 package in ${NW_DEB_DIR#"$NW_REPO"/}, found ${#agent_debs[@]}"
agent_deb=${agent_debs[0]}

step "base rootfs"
base=$(nw_ensure_rootfs)

step "nodewatch layer"
work="$NW_IMAGE_OUT/work"
stage="$work/rootfs"
mkdir -p "$NW_IMAGE_OUT"
for m in "$stage/proc" "$stage/sys"; do mountpoint -q "$m" && umount -l "$m"; done
rm -rf "$work"
mkdir -p "$work"
cp -a "$base" "$stage"
rm -f "$stage/.nodewatch-rootfs-complete"
bash "$NW_IMAGE_DIR/layer.sh" "$stage" "$agent_deb"

step "disk image"
fat_dir="$work/firmware"
mv "$stage/boot/firmware" "$fat_dir"
mkdir "$stage/boot/firmware"
truncate -s "${FAT_MIB}M" "$work/fat.img"
mkfs.vfat -F 32 -n RASPIFIRM "$work/fat.img" >/dev/null
mcopy -s -p -m -i "$work/fat.img" "$fat_dir"/* ::/
# The root file system: what is in it, plus a third and 256 MiB of room; it grows to
# fill the card at first boot (nodewatch-grow-rootfs.service).
used_mib=$(du -sm "$stage" | cut -f1)
root_mib=$(((used_mib * 13 / 10 + 256 + 3) / 4 * 4))
mkfs.ext4 -q -F -L RASPIROOT -d "$stage" "$work/root.img" "${root_mib}M"
image="$work/$IMAGE_NAME"
truncate -s $((OFFSET_MIB + FAT_MIB + root_mib))M "$image"
sfdisk -q "$image" <<EOF
label: dos
unit: sectors
start=$((OFFSET_MIB * 2048)), size=$((FAT_MIB * 2048)), type=c, bootable
start=$(((OFFSET_MIB + FAT_MIB) * 2048)), size=$((root_mib * 2048)), type=83
EOF
dd if="$work/fat.img" of="$image" bs=1M seek="$OFFSET_MIB" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$image" bs=1M seek=$((OFFSET_MIB + FAT_MIB)) conv=notrunc,sparse status=none
rm -f "$work/fat.img" "$work/root.img"

step "compress"
out="$NW_IMAGE_OUT/$IMAGE_NAME.zst"
zstd -q -f -T0 -6 "$image" -o "$out"
(cd "$NW_IMAGE_OUT" && sha256sum "${out##*/}" >"${out##*/}.sha256")
rm -rf "$work"
step "done"

echo
echo "=== nodewatch Pi image (total $(nw_elapsed "$t0"))"
printf '  %s\n' "${STEP_TIMES[@]}"
echo "  image: ${out#"$NW_REPO"/} ($(du -h "$out" | cut -f1) compressed, $((OFFSET_MIB + FAT_MIB + root_mib))M raw)"
echo "  sha256: $(cut -d' ' -f1 "$out.sha256")"
echo "  packages: $(cd "$NW_DEB_DIR" && echo ./*.deb)"
echo "  flash: zstd -dc ${out##*/} | sudo dd of=/dev/sdX bs=4M conv=fsync status=progress"
